import logging
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..deps import AuthDep, JobsDep, SandboxDep, SettingsDep, StoreDep
from ..errors import Invalid, NotFound, ServiceError
from ..kinds import REPORT
from ..responses import OpenedFileResponse
from ..schemas import CheckpointOut, SiteOut, TraceOut, TraceRequest
from ..services import checkpoints as service
from ..services import jobs as job_service
from ..services.trace import trace_in_sandbox
from ..services.uploads import sandboxed_archive_converter, sandboxed_validator
from . import errors

log = logging.getLogger("mnemoscope.server")

router = APIRouter(prefix="/api/checkpoints", tags=["checkpoints"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {
                        "type": "string", "format": "binary",
                        "description": "a mnemoscope .safetensors checkpoint, a mnemoscope .pt dict, a pytorch-ntm "
                                       "state dict, or a Hugging Face save_pretrained folder as .zip, .tar or .tar.gz",
                    }},
                },
            },
        },
    },
}


@router.post(
    "",
    status_code=201,
    response_model=CheckpointOut,
    summary="Upload a checkpoint",
    description=(
        "Streams the multipart field `file` to disk under the size cap, validates it with the safe loader "
        "(no pickle code ever runs) in a sandbox process under the worker memory limit, and stores it under "
        "its sha256. 201 when stored; 200 with the same "
        "record when these exact bytes were uploaded before (the id is derived from the bytes). A pytorch-ntm "
        "state dict is recognised by its keys and imported. A `.zip`, `.tar` or `.tar.gz` of a Hugging Face "
        "save_pretrained folder (config.json and safetensors weights, at the root or in one top folder) is "
        "checked member by member before anything is unpacked (names, types, count and sizes; the archive_max_* "
        "limits), its config sized on the meta device before any weight is loaded, and imported in the sandbox "
        "as `mnemoscope import hf` does; the converted checkpoint is stored under its own hash."
    ),
    responses={200: {"model": CheckpointOut, "description": "these bytes were already stored"},
               **errors(401, 413, 415, 422, 503)},
    openapi_extra=_UPLOAD_BODY,
)
async def upload_checkpoint(request: Request, response: Response, store: StoreDep, settings: SettingsDep,
                            jobs: JobsDep, sandbox: SandboxDep, _: AuthDep) -> dict:
    validator = sandboxed_validator(sandbox, settings.upload_timeout_s, settings.worker_memory_mb)
    converter = sandboxed_archive_converter(sandbox, settings)
    record, created = await service.ingest(request, store, settings.max_upload_bytes, validator, converter)
    response.status_code = 201 if created else 200
    if created and settings.auto_analyze:  # the verdict without a click (a stored result is reused)
        try:
            await run_in_threadpool(job_service.submit, store, jobs, settings, record["id"], REPORT,
                                    REPORT.request_model())
        except ServiceError as exc:  # a full queue or a model over the budget: the upload still stands
            log.info("upload %s stored; its report was not queued: %s", record["id"], exc.message)
    return service.public(record)


@router.get("", response_model=list[CheckpointOut], summary="List checkpoints (oldest first)")
def list_checkpoints(store: StoreDep) -> list[dict]:
    return [service.public(r) for r in store.list_checkpoints()]


@router.get("/{checkpoint_id}", response_model=CheckpointOut, responses=errors(404), summary="One checkpoint")
def get_checkpoint(checkpoint_id: str, store: StoreDep) -> dict:
    return service.public(service.get_or_404(store, checkpoint_id))


@router.delete("/{checkpoint_id}", status_code=204, responses=errors(401, 404),
               summary="Delete a checkpoint, its jobs and their results")
def delete_checkpoint(checkpoint_id: str, store: StoreDep, jobs: JobsDep, _: AuthDep) -> Response:
    job_service.delete_checkpoint(store, jobs, checkpoint_id)
    return Response(status_code=204)


@router.get(
    "/{checkpoint_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "the stored bytes, exactly as uploaded"}, **errors(404)},
    summary="Download the checkpoint file",
)
def download_checkpoint(checkpoint_id: str, store: StoreDep) -> FileResponse:
    record = service.get_or_404(store, checkpoint_id)
    try:
        stored = open(store.checkpoint_path(record), "rb")
    except FileNotFoundError:  # a DELETE won the race between the lookup and here
        raise NotFound(f"no checkpoint with id {checkpoint_id!r} (it was just deleted)") from None
    return OpenedFileResponse(stored, media_type="application/octet-stream",
                              filename=record["filename"] or f"{record['id']}.safetensors")


@router.get("/{checkpoint_id}/sites", response_model=list[SiteOut], responses=errors(404),
            summary="The model's named sites (what trace, ablations and patching can address)")
def list_sites(checkpoint_id: str, store: StoreDep) -> list[dict]:
    return service.get_or_404(store, checkpoint_id)["sites"]


@router.post(
    "/{checkpoint_id}/trace",
    response_model=TraceOut,
    responses=errors(404, 413, 422, 503),
    summary="Run the model on a task sample (synchronous)",
    description=(
        "Samples the task (the checkpoint's own unless the body names another or overrides parameters) with "
        "`seed`, runs the model, and returns inputs, targets, outputs, per-timestep loss and metric and the "
        "requested sites as nested lists with their axis labels. Read-only: no token needed. The request is "
        "priced first (sequence length from the task's parameters, samples, recorded sites, model size): over "
        "this server's budget it is a 422 whose `budget` names the limit and the fields to lower (GET /api/kinds "
        "lists the limits). A long sequence can come back at the figure's resolution: `reduce: {max_points}` max-pools "
        "the time axis (and a slot or key axis longer than that) into at most `max_points` bins, `window: [t0, t1]` "
        "answers only steps t0..t1-1; `time` gives the bin edges in timesteps, and the price is that of the answer, "
        "so a long trace too big in full is allowed reduced. It runs in a sandbox process under a time and memory limit; 503 when it is stopped "
        "or every sandbox is busy."
    ),
)
def trace_checkpoint(checkpoint_id: str, store: StoreDep, sandbox: SandboxDep, settings: SettingsDep,
                     body: Annotated[TraceRequest | None, Body()] = None) -> Response:
    body = body or TraceRequest()
    if body.samples > settings.trace_max_samples:
        raise Invalid(f"samples={body.samples} is more than this server traces at once ({settings.trace_max_samples})")
    answer = trace_in_sandbox(
        store, sandbox, settings, checkpoint_id,
        task_name=body.task.name if body.task else None,
        task_params=body.task.params if body.task else None,
        seed=body.seed, samples=body.samples, sites=body.sites,
        reduce=body.reduce.model_dump() if body.reduce else None, window=body.window,
    )
    # the sandbox's JSON as it is (already the TraceOut shape, too big to parse again here), in
    # pieces: one write of tens of MB would hold the event loop, and /api/health with it
    return StreamingResponse(_pieces(answer), media_type="application/json",
                             headers={"content-length": str(len(answer))})


ANSWER_PIECE = 256 * 1024


async def _pieces(data: bytes):
    for start in range(0, len(data), ANSWER_PIECE):
        yield data[start:start + ANSWER_PIECE]
