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

from pydantic import BaseModel

from mnemoscope import __version__
from mnemoscope.analysis.ablation import MODES
from mnemoscope.models.sites import SiteSpec, resolve_sites

from ..errors import Invalid, NotFound
from ..jobs import JobManager
from ..settings import Settings
from ..store import UNFINISHED, Store, now
from .analysis import report_summary
from .checkpoints import get_or_404
from .models import ModelCache
from .tasks import resolve_task

RESULT_FORMAT = 1  # bump when stored results change shape, so old ones are not reused
# submit and delete take this lock so no job is created for a checkpoint being deleted
_lock = threading.Lock()


def result_key(sha256: str, kind: str, request: dict) -> str:
    blob = json.dumps(
        {"format": RESULT_FORMAT, "version": __version__, "checkpoint": sha256, "kind": kind, "request": request},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _site_specs(record: dict) -> dict[str, SiteSpec]:
    return {s["name"]: SiteSpec(**{**s, "shape": tuple(s["shape"]), "axes": tuple(s["axes"])}) for s in record["sites"]}


def _sites(specs: dict[str, SiteSpec], patterns: list[str]) -> list[str]:
    try:
        return sorted(resolve_sites(specs, patterns))
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def _check_elements(specs: dict[str, SiteSpec], sites: list[str], elements: dict[str, list[int]]) -> None:
    for name in sites:
        spec = specs[name]
        for axis, idx in elements.items():
            if axis not in spec.axes:
                raise Invalid(f"site {name!r} has no axis {axis!r}; its axes are {list(spec.axes)}")
            size = spec.shape[spec.axes.index(axis)]
            if size is None:
                raise Invalid(f"site {name!r}: axis {axis!r} grows with the sequence; choose a fixed-size axis")
            bad = [i for i in idx if not 0 <= i < size]
            if bad or not idx:
                raise Invalid(f"site {name!r}: indices {bad or '[]'} are not valid for axis {axis!r} of size {size}")


def normalize(kind: str, record: dict, body: BaseModel, settings: Settings) -> dict:
    task_choice = body.task
    task = resolve_task(record, task_choice.name if task_choice else None,
                        task_choice.params if task_choice else None, max_int=settings.max_task_param)
    request: dict = {"task": task.spec(), "seed": body.seed}
    specs = _site_specs(record)
    if kind == "ablations":
        request["samples"] = body.samples
        if body.specs is None:
            # every site on its own, zeroed (the output itself excepted: zeroing it says nothing)
            chosen = [{"sites": [n], "mode": "zero", "steps": None, "elements": None, "label": None}
                      for n, s in specs.items() if not s.on_request and s.kind != "output"]
        else:
            chosen = []
            for spec in body.specs:
                if spec.mode not in MODES:
                    raise Invalid(f"unknown ablation mode {spec.mode!r}; choose one of {list(MODES)}")
                sites = _sites(specs, spec.sites)
                elements = {k: sorted(set(v)) for k, v in sorted(spec.elements.items())} if spec.elements else None
                if elements:
                    _check_elements(specs, sites, elements)
                chosen.append({
                    "sites": sites,
                    "mode": spec.mode,
                    "steps": sorted(set(spec.steps)) if spec.steps is not None else None,
                    "elements": elements,
                    "label": spec.label,
                })
        if not chosen:
            raise Invalid("nothing to ablate: this model declares no sites besides its output")
        request["specs"] = chosen
    elif kind == "patching":
        sites = _sites(specs, body.sites) if body.sites else None
        if body.per_element is not None:
            if sites is not None:
                lacking = [n for n in sites if body.per_element not in specs[n].axes]
                if lacking:
                    raise Invalid(f"per_element={body.per_element!r}: sites {lacking} have no such axis")
            elif not any(body.per_element in s.axes for s in specs.values()):
                axes = sorted({a for s in specs.values() for a in s.axes})
                raise Invalid(f"per_element={body.per_element!r}: no site of this model has that axis; "
                              f"its axes are {axes}")
        request.update(
            pairs=body.pairs,
            sites=sites,
            direction=body.direction,
            per_element=body.per_element,
            memory_budget_mb=body.memory_budget_mb,
        )
    elif kind in ("gradients", "report"):
        request["samples"] = body.samples
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    return request


def submit(store: Store, manager: JobManager, settings: Settings, checkpoint_id: str, kind: str,
           body: BaseModel) -> dict:
    """Queue a job, or return the identical job already queued or running, or a new job
    that is done at once because the same request on the same bytes was computed before."""
    request = normalize(kind, get_or_404(store, checkpoint_id), body, settings)
    with _lock:
        record = get_or_404(store, checkpoint_id)
        key = result_key(record["sha256"], kind, request)
        active = store.find_job_by_key(key, UNFINISHED)
        if active is not None:
            return active
        job = {
            "id": uuid.uuid4().hex, "checkpoint_id": checkpoint_id, "kind": kind, "request": request, "key": key,
            "status": "queued", "progress": 0.0, "cached": 0, "created_at": now(),
        }
        previous = store.find_job_by_key(key, ("done",))
        if previous is not None and store.result_path(key).is_file():
            t = now()
            job.update(status="done", progress=1.0, cached=1, started_at=t, finished_at=t)
            job = store.add_job(job)
            if kind == "report":  # the badge shows the latest finished report, reused or not
                summary = report_summary(store.read_result(key))
                store.set_verdict(checkpoint_id, summary["verdict"], summary["score"], job["id"])
            return job
        job = store.add_job(job)
    manager.submit(job["id"])
    return job


def on_done(store: Store):
    """Dispatcher callback: a finished report sets the checkpoint's verdict badge."""

    def callback(job: dict, summary: dict) -> None:
        if job["kind"] == "report":
            store.set_verdict(job["checkpoint_id"], summary.get("verdict"), summary.get("score"), job["id"])

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


def delete_checkpoint(store: Store, manager: JobManager, cache: ModelCache, checkpoint_id: str) -> dict:
    with _lock:
        record = get_or_404(store, checkpoint_id)
        for job in store.list_jobs(checkpoint_id=checkpoint_id, limit=1_000_000):
            if job["status"] in UNFINISHED and store.update_job(
                job["id"], only_if=UNFINISHED, status="cancelled", message="checkpoint deleted", finished_at=now()
            ):
                manager.cancel(job["id"])
        store.delete_checkpoint(checkpoint_id)
        cache.forget(record["sha256"])
    return record
