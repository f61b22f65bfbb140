"""Jobs as the API sees them: normalise a request, reuse a stored result, queue, cancel.

A request is normalised before anything else (task resolved to its full spec, sites
resolved to names, defaults filled in), so two requests that mean the same thing share
one result: its key is the sha256 of the checkpoint bytes, the job kind, the version and
the canonical JSON of the normalised request.
"""
from __future__ import annotations

import hashlib
import json
import threading
import uuid
from typing import Mapping

from mnemoscope import __version__
from mnemoscope.analysis import ANALYSIS_VERSION

from .. import budget
from ..errors import NotFound, TooManyRequests
from ..jobs import JobManager
from ..kinds import JobKind
from ..request_base import JobRequest
from ..settings import Settings
from ..store import UNFINISHED, Store, now
from .checkpoints import get_or_404
from .tasks import resolve_task

RETRY_AFTER_S = 30  # a full queue drains at the pace of jobs: ask again in half a minute
RESULT_FORMAT = 1  # bump when stored results change shape, so old ones are not reused
# submit and delete take this lock so no job is created for a checkpoint being deleted
_lock = threading.Lock()


def result_key(sha256: str, kind: str, request: dict) -> str:
    blob = json.dumps(
        {"format": RESULT_FORMAT, "version": __version__, "analysis": ANALYSIS_VERSION, "checkpoint": sha256,
         "kind": kind, "request": request},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def normalize(kind: JobKind, record: dict, body: JobRequest, settings: Settings, store: Store | None = None) -> dict:
    """The task resolved to its full spec and the seed (every job has them), then the kind's own fields.
    With the `store`, the task may name a stored probe."""
    choice = body.task
    task = resolve_task(record, choice.name if choice else None, choice.params if choice else None,
                        max_int=settings.max_task_param, store=store)
    return {"task": task.spec(), "seed": body.seed, **kind.normalize(record, body, settings)}


def submit(store: Store, manager: JobManager, settings: Settings, checkpoint_id: str, kind: JobKind,
           body: JobRequest) -> dict:
    """Queue a job, or return the identical job already queued or running, or a new job
    that is done at once because the same request on the same bytes was computed before.
    A request over the budget is a 422 and a full queue a 429, before anything is stored."""
    record = get_or_404(store, checkpoint_id)
    request = normalize(kind, record, body, settings, store)
    budget.check_job(kind, record, request, settings)
    with _lock:
        record = get_or_404(store, checkpoint_id)
        key = result_key(record["sha256"], kind.name, request)
        active = store.find_job_by_key(key, UNFINISHED)
        if active is not None:
            return active
        job = {
            "id": uuid.uuid4().hex, "checkpoint_id": checkpoint_id, "kind": kind.name, "request": request,
            "key": key, "status": "queued", "progress": 0.0, "cached": 0, "created_at": now(),
        }
        previous = store.find_job_by_key(key, ("done",))
        if previous is not None and store.result_path(key).is_file():
            t = now()
            job.update(status="done", progress=1.0, cached=1, started_at=t, finished_at=t)
            job = store.add_job(job)
            if kind.on_done is not None:  # a reused result is done as much as a computed one
                kind.on_done(store, job, kind.summarize(store.read_result(key)))
            return job
        queued = manager.queued()
        if queued >= settings.max_queued_jobs:
            raise TooManyRequests(
                f"the job queue is full ({queued} jobs are waiting for a worker, this server's limit "
                f"max_queued_jobs); try again in {RETRY_AFTER_S} s", retry_after_s=RETRY_AFTER_S)
        job = store.add_job(job)
        manager.submit(job["id"])  # inside the lock, so concurrent submissions see each other in the count
    return job


def on_done(store: Store, kinds: Mapping[str, JobKind]):
    """Dispatcher callback: the finished job's kind does what it does when done (the
    report sets the checkpoint's verdict badge)."""

    def callback(job: dict, summary: dict) -> None:
        kind = kinds.get(job["kind"])
        if kind is not None and kind.on_done is not None:
            kind.on_done(store, job, summary)

    return callback


def get_or_404_job(store: Store, job_id: str) -> dict:
    job = store.get_job(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}; GET /api/jobs lists them")
    return job


def public(store: Store, job: dict, with_result: bool = False) -> dict:
    out = {k: job[k] for k in ("id", "checkpoint_id", "kind", "status", "message", "request", "error",
                               "created_at", "started_at", "finished_at")}
    out["progress"] = min(max(float(job["progress"] or 0.0), 0.0), 1.0)
    out["cached"] = bool(job["cached"])
    out["result"] = None
    if with_result and job["status"] == "done":
        try:
            out["result"] = store.read_result(job["key"])
        except FileNotFoundError:  # deleted with its checkpoint a moment ago
            out.update(status="failed", error="the stored result is gone (was the checkpoint deleted?)")
    return out


def cancel(store: Store, manager: JobManager, job_id: str) -> dict:
    job = get_or_404_job(store, job_id)
    if job["status"] in UNFINISHED:
        if store.update_job(job_id, only_if=UNFINISHED, status="cancelled", message="cancelled by request",
                            finished_at=now()):
            manager.cancel(job_id)
        job = get_or_404_job(store, job_id)
    return job


def delete_checkpoint(store: Store, manager: JobManager, checkpoint_id: str) -> dict:
    with _lock:
        record = get_or_404(store, checkpoint_id)
        for job in store.list_jobs(checkpoint_id=checkpoint_id, limit=1_000_000):
            if job["status"] in UNFINISHED and store.update_job(
                job["id"], only_if=UNFINISHED, status="cancelled", message="checkpoint deleted", finished_at=now()
            ):
                manager.cancel(job["id"])
        store.delete_checkpoint(checkpoint_id)
    return record
