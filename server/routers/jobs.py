"""Job routes, built from the app's table of kinds: one POST route per kind to start a
job, and the routes that list, poll and cancel jobs.

No `from __future__ import annotations` here: FastAPI reads the generated handlers'
annotations, which name each kind's own request model, as objects.
"""
from typing import Annotated, Mapping

from fastapi import APIRouter, Body, Query

from ..deps import AuthDep, JobsDep, SettingsDep, StoreDep
from ..kinds import JobKind, names_type
from ..schemas import JobStatus, job_out_model
from ..services import jobs as service
from . import errors

_JOB_DOC = (
    " Answers 202 with a job at once; poll GET /api/jobs/{job_id}. The same request on the same checkpoint "
    "bytes reuses the stored result (the job is `done` immediately, `cached: true`), and an identical job still "
    "queued or running is returned instead of starting another."
)


PREFIX = "/api"


def start_path(kind_name: str) -> str:
    """The path (under PREFIX) of the route that starts a job of this kind."""
    return f"/checkpoints/{{checkpoint_id}}/{kind_name}"


def build_router(kinds: Mapping[str, JobKind]) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["jobs"])
    JobOut = job_out_model(tuple(kinds))
    for kind in kinds.values():
        _add_start_route(router, kind, JobOut)

    KindName = names_type(kinds)

    @router.get("/jobs", response_model=list[JobOut], summary="List jobs, newest first (without results)")
    def list_jobs(
        store: StoreDep,
        checkpoint_id: Annotated[str | None, Query(max_length=64)] = None,
        status: Annotated[JobStatus | None, Query()] = None,
        kind: Annotated[KindName | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict]:
        return [service.public(store, j) for j in store.list_jobs(checkpoint_id, status, kind, limit)]

    @router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(404),
                summary="One job: status, progress, and its result once done")
    def get_job(job_id: str, store: StoreDep) -> dict:
        return service.public(store, service.get_or_404_job(store, job_id), with_result=True)

    @router.delete("/jobs/{job_id}", response_model=JobOut, responses=errors(401, 404),
                   summary="Cancel a job",
                   description="A queued or running job becomes `cancelled` (a running one is stopped; its worker "
                               "is killed if it does not stop within a few seconds). A finished job is returned "
                               "unchanged.")
    def cancel_job(job_id: str, store: StoreDep, jobs: JobsDep, _: AuthDep) -> dict:
        return service.public(store, service.cancel(store, jobs, job_id))

    return router


def _add_start_route(router: APIRouter, kind: JobKind, JobOut: type) -> None:
    Request = kind.request_model

    def start(checkpoint_id: str, store: StoreDep, jobs: JobsDep, settings: SettingsDep, _: AuthDep,
              body: Annotated[Request | None, Body()] = None) -> dict:
        job = service.submit(store, jobs, settings, checkpoint_id, kind, body or Request())
        return service.public(store, job)

    router.add_api_route(
        start_path(kind.name), start, methods=["POST"], name=f"start_{kind.name}",  # its operationId as before
        status_code=202, response_model=JobOut, responses=errors(401, 404, 413, 422, 429),
        summary=kind.summary, description=kind.description + _JOB_DOC,
    )
