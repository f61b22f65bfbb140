"""Synchronous trace: run a checkpoint on a task sample and return what the dashboard
draws (inputs, targets, outputs, per-step loss and metric, chosen sites), each tensor
with its axis labels. Every distribution site comes with the engine's normalised
entropy per step, so no client computes analysis numbers itself.

`trace` computes the answer; the API process calls `trace_in_sandbox`, which prices the
request against the budget first and has a sandbox process run `trace` (services/isolated.py)
under a time and memory limit, answering with its JSON bytes.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mnemoscope.analysis.ablation import position_scores
from mnemoscope.analysis.entropy import per_step_entropy
from mnemoscope.analysis.sites import specs
from mnemoscope.analysis.trace import SiteRecord, run_trace

from .. import budget
from ..errors import Invalid, NotFound, ServiceError, Unavailable
from ..kinds.base import site_names, site_specs
from ..sandbox import AnswerTooLarge, CallTimeout, OutOfMemory, Sandbox, WorkerDied
from ..settings import Settings
from ..store import Store
from .checkpoints import get_or_404
from .models import ModelCache
from .serialize import labelled, to_jsonable
from .tasks import resolve_task


def trace(
    store: Store,
    cache: ModelCache,
    checkpoint_id: str,
    *,
    task_name: str | None,
    task_params: dict[str, Any] | None,
    seed: int,
    samples: int,
    sites: Sequence[str],
    max_task_param: int,
) -> dict:
    record = get_or_404(store, checkpoint_id)
    task = resolve_task(record, task_name, task_params, max_int=max_task_param)
    try:
        batch = task.sample(samples, seed)
    except ValueError as exc:
        raise Invalid(f"task {task.name!r} cannot sample: {exc}") from exc

    with cache.borrow(record["sha256"], store.checkpoint_path(record)) as model:
        try:
            result = run_trace(model, task, batch, list(sites))
        except ValueError as exc:  # unknown site names, task/model mismatch: the message lists the options
            raise Invalid(str(exc)) from exc
        site_specs = specs(model)
    # per sequence and step (the engine's per-step arrays are means over rows)
    loss = task.loss_per_step(result.logits, batch)
    metric = task.metric_per_step(result.logits, batch)
    # each scored position's own score (the dashboard's per-step bars), NaN -> null elsewhere
    metric_scored = torch.where(batch.mask.bool(), position_scores(task, result.logits, batch),
                                torch.tensor(float("nan")))

    token_inputs = batch.inputs.dim() == 2
    bits = task.output_kind == "bits"
    out_axis = "bit" if bits else "class"
    return {
        "checkpoint_id": record["id"],
        "task": task.spec(),
        "seed": seed,
        "samples": samples,
        "output_kind": task.output_kind,
        "metric_name": result.metric_name,
        "higher_is_better": result.higher_is_better,
        "inputs": labelled(batch.inputs, ["batch", "time"] if token_inputs else ["batch", "time", "feature"]),
        "targets": labelled(batch.targets, ["batch", "time", "bit"] if bits else ["batch", "time"]),
        "mask": labelled(batch.mask, ["batch", "time"]),
        "outputs": labelled(result.probs, ["batch", "time", out_axis]),
        "logits": labelled(result.logits, ["batch", "time", out_axis]),
        "loss": labelled(loss, ["batch", "time"]),
        "metric": labelled(metric, ["batch", "time"]),
        "metric_scored": labelled(metric_scored, ["batch", "time"]),
        "summary": to_jsonable({
            "loss": result.loss,
            "metric": result.metric,
            "metric_per_sequence": result.metric_per_sequence,
            "chance": result.chance,
        }),
        "sites": {name: _site_out(rec, site_specs[name]) for name, rec in result.sites.items()},
    }


def _site_out(rec: SiteRecord, spec) -> dict:
    """A recorded site, labelled, with the engine's per-step normalised entropy over the
    distribution axis (axes: the site's without that last one) where it is a distribution."""
    entropy = labelled(per_step_entropy(spec, rec.values), rec.axes[:-1]) if rec.distribution else None
    return {"kind": rec.kind, "distribution": rec.distribution, **labelled(rec.values, rec.axes), "entropy": entropy}


def trace_in_sandbox(
    store: Store,
    sandbox: Sandbox,
    settings: Settings,
    checkpoint_id: str,
    *,
    task_name: str | None,
    task_params: dict[str, Any] | None,
    seed: int,
    samples: int,
    sites: Sequence[str],
) -> bytes:
    """The trace's JSON answer, computed in a sandbox process; 422 with a `budget` before
    anything runs when the request costs more than this server allows."""
    record = get_or_404(store, checkpoint_id)
    task = resolve_task(record, task_name, task_params, max_int=settings.max_task_param)
    cost = budget.estimate_trace(record, task, samples, site_names(site_specs(record), list(sites)))
    budget.check_trace(cost, settings)
    try:
        return sandbox.call(
            # waiting longer than one trace may run would only mean the sandboxes are stuck
            "trace", timeout_s=settings.trace_timeout_s, wait_s=settings.trace_timeout_s,
            max_bytes=settings.trace_max_bytes,
            record=record, path=str(store.checkpoint_path(record)), cache_models=settings.trace_cache_models,
            task_name=task_name, task_params=task_params, seed=seed, samples=samples, sites=list(sites),
            max_task_param=settings.max_task_param,
        )
    except AnswerTooLarge as exc:
        raise budget.refusal("trace", budget.TRACE_BYTES, exc.size, settings) from exc
    except OutOfMemory as exc:
        raise budget.refusal("trace", budget.MEMORY, settings.worker_memory_mb, settings) from exc
    except CallTimeout as exc:
        raise Unavailable(f"the trace was stopped after {exc.seconds:g} s, this server's limit (trace_timeout_s); "
                          "ask for fewer samples or sites or shorter sequences, or try again when it is less busy") from exc
    except WorkerDied as exc:
        raise Unavailable(f"the trace failed: {exc} (out of memory?); try again with a smaller request") from exc
    except ServiceError as exc:
        if exc.status_code >= 500 and not store.checkpoint_path(record).is_file():
            # deleted while its trace ran: the checkpoint is gone, not the server broken
            raise NotFound(f"no checkpoint with id {checkpoint_id!r} (it was deleted)") from exc
        raise
