"""The Dash app, served by the API server's own process at /dashboard/.

    from mnemoscope.dashboard.app import mount_dashboard
    mount_dashboard(fastapi_app, settings)     # /dashboard/ -> Dash (Flask, via a2wsgi)

Pages live one per module in `pages/` (`PATH`, `TITLE`, `layout(params, context)`,
`register(app, context)`). Routing is a single callback on the URL's path: the query
string only seeds a page's controls, and pages write their parameters back with
`history.replaceState`, so sharing or reloading a URL restores the view without the
router re-rendering the page on every change.

Every number comes from the REST API through `api.ApiClient`; nothing here imports
torch or the models.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dash
from dash import ALL, MATCH, ClientsideFunction, Input, Output, State, dcc, html
from dash.exceptions import DependencyException

from .components import error_box
from .context import Context, parse_query
from .pages import ablate, checkpoints, compare, explore, gradients, patch, sweeps

PAGES = [checkpoints, explore, ablate, patch, gradients, compare, sweeps]
ASSETS = Path(__file__).resolve().parent / "assets"
log = logging.getLogger("mnemoscope.dashboard")


def page_for(pathname: str | None, prefix: str = "/dashboard/"):
    """The page module for a browser path (unknown paths: None)."""
    path = (pathname or "").split("?")[0]
    if path.startswith(prefix):
        path = path[len(prefix):]
    elif path.rstrip("/") == prefix.rstrip("/"):
        path = ""
    path = path.strip("/")
    for page in PAGES:
        if page.PATH == path or (path == "checkpoints" and page is checkpoints):
            return page
    return None


def render_page(pathname: str | None, search: str | None, context: Context):
    """(page content, nav classes) for a URL."""
    page = page_for(pathname, context.prefix)
    params = parse_query(search)
    if page is None:
        content = html.Div(
            [html.H2("Page not found"),
             html.P(["There is no page ", html.Code(pathname or ""), ". ",
                     dcc.Link("Back to the checkpoints", href=context.prefix)])],
            className="ms-page",
        )
    else:
        content = page.layout(params, context)
    classes = ["ms-nav-link ms-nav-active" if p is page else "ms-nav-link" for p in PAGES]
    return content, classes


def initial_page(context: Context):
    """The page the browser is opening, rendered into the first layout so its callbacks
    start without waiting for the router's round trip. Dash fetches the layout from the
    page itself, so the request's Referer is the page's URL; without one the router
    renders the page as usual."""
    import flask

    if not flask.has_request_context():
        return None, None
    referrer = flask.request.referrer or ""
    parts = urlsplit(referrer)
    if not parts.path.startswith(context.prefix.rstrip("/")):
        return None, None
    content, _ = render_page(parts.path, parts.query, context)
    return content, parts.path


def shell(context: Context, content=None, rendered: str | None = None) -> html.Div:
    nav = [dcc.Link(p.TITLE, href=context.href(p.PATH), id=f"nav-{p.__name__.rsplit('.', 1)[-1]}",
                    className="ms-nav-link") for p in PAGES]
    return html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            dcc.Store(id="current-checkpoint", storage_type="session"),
            dcc.Store(id="nav-bases", data=[context.href(p.PATH) for p in PAGES]),
            html.Header(
                [
                    dcc.Link([html.Span("mnemo", className="ms-brand-a"), html.Span("scope", className="ms-brand-b")],
                             href=context.prefix, className="ms-brand"),
                    html.Nav(nav, className="ms-nav"),
                    html.Div(
                        [html.Label("Token", htmlFor="token-input", className="ms-token-label"),
                         dcc.Input(id="token-input", type="password", placeholder="API token",
                                   persistence=True, persistence_type="session", className="ms-input",
                                   autoComplete="off")],
                        className="ms-token",
                        hidden=not context.token_required,
                        title="This server needs a token for uploads and analyses",
                    ),
                ],
                className="ms-header",
            ),
            dcc.Store(id="rendered-path", data=rendered),
            html.Div(id="global-error"),
            html.Main(content, id="page", className="ms-main"),
        ],
        className="ms-app",
    )


def create_dash_app(context: Context | None = None, *, name: str = "mnemoscope.dashboard") -> dash.Dash:
    """A Dash app whose routes are relative ("/"), to be mounted at `context.prefix`."""
    context = context or Context()

    def on_error(err: Exception) -> None:
        # last resort: a readable line in the page, never a traceback
        log.exception("dashboard callback failed", exc_info=err)
        dash.set_props("global-error", {"children": error_box(
            f"something went wrong in the dashboard ({type(err).__name__}: {err}); the server log has details")})

    app = dash.Dash(
        name,
        requests_pathname_prefix=context.prefix,
        routes_pathname_prefix="/",
        assets_folder=str(ASSETS),
        suppress_callback_exceptions=True,
        title="mnemoscope",
        update_title=None,
        compress=False,
        on_error=on_error,
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    def serve_layout():
        content, rendered = initial_page(context)
        return shell(context, content, rendered)

    app.layout = serve_layout
    # every page's components, so Dash can check callbacks against them
    app.validation_layout = html.Div(
        [shell(context)] + [p.layout({}, context) for p in PAGES]
    )

    @app.callback(
        Output("page", "children"),
        Output("rendered-path", "data"),
        *[Output(f"nav-{p.__name__.rsplit('.', 1)[-1]}", "className") for p in PAGES],
        Input("url", "pathname"),
        State("url", "search"),
        State("rendered-path", "data"),
    )
    def _route(pathname, search, rendered):
        content, classes = render_page(pathname, search, context)
        if rendered and rendered == pathname:
            content = dash.no_update  # the first layout already holds this page
        return (content, None, *classes)

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "navHrefs"),
        *[Output(f"nav-{p.__name__.rsplit('.', 1)[-1]}", "href") for p in PAGES],
        Input("current-checkpoint", "data"),
        State("nav-bases", "data"),
    )
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "exportResult"),
        Output({"type": "export-sink", "name": MATCH}, "children"),
        Input({"type": "export-btn", "name": MATCH, "fmt": ALL}, "n_clicks"),
        State({"type": "result", "name": MATCH}, "data"),
        prevent_initial_call=True,
    )
    for page in PAGES:
        page.register(app, context)

    @app.server.errorhandler(DependencyException)
    def _unknown_component_file(_: DependencyException):
        # Dash refuses a script path it did not register (`..%2F` included) by raising;
        # that is a missing file to the browser, not a server error
        return {"detail": "no such dashboard file"}, 404

    return app


def _api_path(prefix: str) -> str:
    """Where the browser finds the API: next to the dashboard ("/x/dashboard/" -> "/x/api")."""
    root = prefix.rstrip("/")
    root = root[: -len("/dashboard")] if root.endswith("/dashboard") else ""
    return f"{root}/api"


def mount_dashboard(fastapi_app: Any, settings: Any = None, *, api_url: str | None = None,
                    path: str = "/dashboard") -> dash.Dash:
    """Serve the dashboard from `fastapi_app` at `path`/ and redirect `/` there.

    The Flask app runs behind a2wsgi's thread pool, so its callbacks (which call the
    API over HTTP on this same server) never block the event loop."""
    from a2wsgi import WSGIMiddleware
    from starlette.responses import RedirectResponse

    root_path = getattr(fastapi_app, "root_path", "") or ""
    prefix = f"{root_path}{path.rstrip('/')}/"
    token = getattr(settings, "token", None) if settings is not None else None
    context = Context(prefix=prefix, api_url=api_url, api_path=_api_path(prefix), token_required=token is not None)
    app = create_dash_app(context)

    fastapi_app.mount(path.rstrip("/"), WSGIMiddleware(app.server, workers=8), name="dashboard")

    if not any(getattr(r, "path", None) == "/" for r in fastapi_app.router.routes):
        @fastapi_app.get("/", include_in_schema=False)
        def _home() -> RedirectResponse:
            return RedirectResponse(url=prefix, status_code=307)

    return app
