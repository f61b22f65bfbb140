"""The FastAPI application: `create_app(settings)`.

    app = create_app(Settings(data_dir="/srv/mnemoscope"))
    uvicorn.run(app)            # what `mnemoscope serve` does

The job kinds it serves are `mnemoscope.server.kinds.KINDS` unless it is given others
(`create_app(settings, kinds={**KINDS, "mine": JobKind(...)})`): their routes, schemas,
GET /api/kinds entries and worker dispatch all follow from that table.

Routes live under /api (OpenAPI at /docs and /openapi.json); the dashboard is mounted at
/dashboard/ and `/` redirects there.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from functools import partial
from typing import Mapping

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnemoscope import __version__
from mnemoscope.analysis import ANALYSIS_VERSION

from .errors import ServiceError, StartupError
from .jobs import JobManager
from .kinds import KINDS, JobKind
from .limits import map_large_blocks
from .middleware import BodyLimit, HostAndOriginGuard
from .routers import checkpoints, health, jobs, kinds as kinds_router
from .sandbox import Sandbox
from .services.analysis import execute
from .services.isolated import HANDLERS
from .services.jobs import on_done
from .routers import probes as probes_router, sweeps as sweeps_router
from .settings import Settings
from .store import Store

log = logging.getLogger("mnemoscope.server")

DESCRIPTION = """Does this network really use its memory? Upload checkpoints, trace them, and run
ablation, patching, gradient-flow and reliance-report jobs. Mutating routes need
`Authorization: Bearer <token>` when the server runs with `MNEMOSCOPE_TOKEN`."""


def create_app(settings: Settings | None = None, kinds: Mapping[str, JobKind] | None = None) -> FastAPI:
    settings = settings or Settings()
    kinds = dict(KINDS if kinds is None else kinds)
    for name, kind in kinds.items():
        if name != kind.name:
            raise ValueError(f"job kind {kind.name!r} is listed under the name {name!r}")
    store = Store(settings.data_dir)
    recovered = store.recover()
    if any(recovered.values()):
        log.info("data directory recovered: %s", recovered)
    stale = store.migrate_analysis(ANALYSIS_VERSION)
    if stale:
        log.info("%d verdict(s) came from an older analysis engine and were cleared; run the reports again", stale)
    try:
        manager = JobManager(store, settings, execute=partial(execute, kinds, device=settings.device),
                             on_done=on_done(store, kinds))
    except TypeError:  # a kind the worker processes could not import
        store.close()
        raise

    # traces and upload validation run in sandbox processes, started on first use; their
    # answers pass through here as bytes, which go back to the system once sent
    sandbox = Sandbox(settings, HANDLERS)
    map_large_blocks()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        try:
            yield
        finally:
            sandbox.shutdown()
            manager.shutdown()

    app = FastAPI(
        title="mnemoscope",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.jobs = manager
    app.state.kinds = kinds
    app.state.sandbox = sandbox
    app.state.started_at = time.time()

    app.add_middleware(BodyLimit, exempt=(("POST", "/api/checkpoints"),))
    if settings.cors_origins:  # off unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(HostAndOriginGuard, settings=settings)  # outermost: before CORS, body reads and routes
    _add_error_handlers(app)
    _document_errors(app)
    for router in (health.router, checkpoints.router, jobs.build_router(kinds), kinds_router.router, sweeps_router.router,
                   probes_router.router):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    # -- dashboard ------------------------------------------------------------------------------
    # The Dash dashboard mounts itself at /dashboard/ here: `mount_dashboard(app, settings)`
    # (mnemoscope.dashboard.app) adds the sub-application, which calls the /api routes.
    # Settings(dashboard=False) / MNEMOSCOPE_DASHBOARD=false serves the API alone.
    if settings.dashboard:
        _mount_dashboard(app, settings)
    return app


def _mount_dashboard(app: FastAPI, settings: Settings) -> None:
    # A dashboard that cannot mount stops the server: serving the API with 404s at
    # /dashboard/ hides the cause from the user, who came for the dashboard.
    try:
        from mnemoscope.dashboard.app import mount_dashboard
    except ImportError as exc:
        raise StartupError(
            f"the dashboard cannot be mounted: {exc}. Reinstall mnemoscope (`pip install -e .` installs what "
            "the dashboard needs), or set MNEMOSCOPE_DASHBOARD=false to serve the API alone"
        ) from exc
    mount_dashboard(app, settings)


def _document_errors(app: FastAPI) -> None:
    """Every 422 in the OpenAPI document gets the shape this app really sends (ErrorOut:
    a readable `detail` string plus per-field `errors`), not FastAPI's default."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                response = operation.get("responses", {}).get("422")
                if response is not None:
                    response["description"] = "the request is malformed or cannot be done; `detail` says why"
                    response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _readable(errors: list[dict]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            where = ".".join(loc[1:]) or ("request body" if loc[0] == "body" else loc[0])
            where = f"{loc[0]} {where}" if loc[0] != "body" else where
        else:
            where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not decodable JSON: a malformed body is a 422 here
            return JSONResponse({"detail": "invalid request: the body is not valid JSON (or not UTF-8)"},
                                status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        fields = [
            {"loc": [x if isinstance(x, int) else str(x) for x in e.get("loc", ())],
             "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors
        ]
        return JSONResponse({"detail": _readable(errors), "errors": fields}, status_code=422)
