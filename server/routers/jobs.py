from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query

from ..deps import AuthDep, JobsDep, SettingsDep, StoreDep
from ..schemas import AblationsRequest, GradientsRequest, JobOut, JobStatus, PatchingRequest, ReportRequest
from ..services import jobs as service
from . import errors

router = APIRouter(prefix="/api", tags=["jobs"])

_JOB_DOC = (
    " Answers 202 with a job at once; poll GET /api/jobs/{job_id}. The same request on the same checkpoint "
    "bytes reuses the stored result (the job is `done` immediately, `cached: true`), and an identical job still "
    "queued or running is returned instead of starting another."
)


@router.post("/checkpoints/{checkpoint_id}/ablations", status_code=202, response_model=JobOut,
             responses=errors(401, 404, 413, 422), summary="Start an ablation job",
             description="Replace sites (zero, mean, ...) and measure the task metric." + _JOB_DOC)
def start_ablations(checkpoint_id: str, store: StoreDep, jobs: JobsDep, settings: SettingsDep, _: AuthDep,
                    body: Annotated[AblationsRequest | None, Body()] = None) -> dict:
    job = service.submit(store, jobs, settings, checkpoint_id, "ablations", body or AblationsRequest())
    return service.public(store, job)


@router.post("/checkpoints/{checkpoint_id}/patching", status_code=202, response_model=JobOut,
             responses=errors(401, 404, 413, 422), summary="Start an activation-patching job",
             description="Patch sites between clean and corrupted runs." + _JOB_DOC)
def start_patching(checkpoint_id: str, store: StoreDep, jobs: JobsDep, settings: SettingsDep, _: AuthDep,
                   body: Annotated[PatchingRequest | None, Body()] = None) -> dict:
    job = service.submit(store, jobs, settings, checkpoint_id, "patching", body or PatchingRequest())
    return service.public(store, job)


@router.post("/checkpoints/{checkpoint_id}/gradients", status_code=202, response_model=JobOut,
             responses=errors(401, 404, 413, 422), summary="Start a gradient-flow job",
             description="How much gradient reaches the memory path versus the bypass." + _JOB_DOC)
def start_gradients(checkpoint_id: str, store: StoreDep, jobs: JobsDep, settings: SettingsDep, _: AuthDep,
                    body: Annotated[GradientsRequest | None, Body()] = None) -> dict:
    job = service.submit(store, jobs, settings, checkpoint_id, "gradients", body or GradientsRequest())
    return service.public(store, job)


@router.post("/checkpoints/{checkpoint_id}/report", status_code=202, response_model=JobOut,
             responses=errors(401, 404, 413, 422), summary="Start a full reliance report",
             description="Ablations, patching and gradients combined into a verdict; when done, the "
                         "checkpoint's `verdict` shows it." + _JOB_DOC)
def start_report(checkpoint_id: str, store: StoreDep, jobs: JobsDep, settings: SettingsDep, _: AuthDep,
                 body: Annotated[ReportRequest | None, Body()] = None) -> dict:
    job = service.submit(store, jobs, settings, checkpoint_id, "report", body or ReportRequest())
    return service.public(store, job)


@router.get("/jobs", response_model=list[JobOut], summary="List jobs, newest first (without results)")
def list_jobs(
    store: StoreDep,
    checkpoint_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[JobStatus | None, Query()] = None,
    kind: Annotated[Literal["ablations", "patching", "gradients", "report"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    return [service.public(store, j) for j in store.list_jobs(checkpoint_id, status, kind, limit)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(404),
            summary="One job: status, progress, and its result once done")
def get_job(job_id: str, store: StoreDep) -> dict:
    return service.public(store, service.get_or_404_job(store, job_id), with_result=True)


@router.delete("/jobs/{job_id}", response_model=JobOut, responses=errors(401, 404),
               summary="Cancel a job",
               description="A queued or running job becomes `cancelled` (a running one is stopped; its worker is "
                           "killed if it does not stop within a few seconds). A finished job is returned unchanged.")
def cancel_job(job_id: str, store: StoreDep, jobs: JobsDep, _: AuthDep) -> dict:
    return service.public(store, service.cancel(store, jobs, job_id))
