"""Synchronous trace: run a checkpoint on a task sample and return what the dashboard
draws (inputs, targets, outputs, per-step loss and metric, chosen sites), each tensor
with its axis labels. Every distribution site comes with the engine's normalised
entropy per step, so no client computes analysis numbers itself.

A long sequence comes back as small as its figure: `window` cuts it to steps t0..t1-1 and
`reduce` max-pools each time axis (and slot or key axis) to at most `max_points` bins
(server/reduction.py says which value a bin keeps); `time` in the answer gives the bin
edges in real timesteps. The whole forward of the latest traces stays in the sandbox
process (`ForwardCache`, `trace_forward_cache_mb`), so zooming into a window of the same
trace does not run the model again.

`trace` computes the answer; the API process calls `trace_in_sandbox`, which prices the
request against the budget first and has a sandbox process run `trace` (services/isolated.py)
under a time and memory limit, answering with its JSON bytes.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Sequence

import torch

from mnemoscope.analysis.ablation import position_scores
from mnemoscope.analysis.entropy import per_step_entropy
from mnemoscope.analysis.sites import specs
from mnemoscope.analysis.trace import run_trace

from .. import budget
from ..errors import Invalid, NotFound, ServiceError, Unavailable
from ..kinds.base import site_names, site_specs
from ..reduction import bin_edges, bin_width, reduce_labelled
from ..sandbox import AnswerTooLarge, CallTimeout, OutOfMemory, Sandbox, WorkerDied
from ..settings import MiB, Settings
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
    reduce: dict | None = None,
    window: Sequence[int] | None = None,
    forward_cache_bytes: int = 0,
) -> dict:
    """The trace answer; with `window` only steps t0..t1-1 (the forward still runs the
    whole prefix: the state depends on it), with `reduce` every time axis (and slot or
    key axis) max-pooled to at most `reduce["max_points"]` bins (server/reduction.py)."""
    record = get_or_404(store, checkpoint_id)
    task = resolve_task(record, task_name, task_params, max_int=max_task_param)
    key = (record["sha256"], json.dumps(task.spec(), sort_keys=True, default=str), seed, samples, tuple(sites))
    full = _forwards.get(key)
    if full is None:
        full = _forward(store, cache, record, task, seed, samples, sites)
        _forwards.put(key, full, forward_cache_bytes)
    return _answer(full, window, (reduce or {}).get("max_points"))


def _forward(store: Store, cache: ModelCache, record: dict, task, seed: int, samples: int,
             sites: Sequence[str]) -> dict:
    """The whole trace as tensors: each `[batch, time, ...]` value with its axes and the
    rule that pools it (server/reduction.py), and the whole-sequence summary."""
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
    worst = "min" if result.higher_is_better else "max"
    values = {
        "inputs": (batch.inputs, ["batch", "time"] if token_inputs else ["batch", "time", "feature"], "absmax"),
        "targets": (batch.targets, ["batch", "time", "bit"] if bits else ["batch", "time"], "absmax"),
        "mask": (batch.mask, ["batch", "time"], "max"),
        "outputs": (result.probs, ["batch", "time", out_axis], "absmax"),
        "logits": (result.logits, ["batch", "time", out_axis], "absmax"),
        "loss": (loss, ["batch", "time"], "max"),
        "metric": (metric, ["batch", "time"], worst),
        "metric_scored": (metric_scored, ["batch", "time"], worst),
    }
    recorded = {}
    for name, rec in result.sites.items():
        entropy = (per_step_entropy(site_specs[name], rec.values), rec.axes[:-1], "min") if rec.distribution else None
        recorded[name] = {"kind": rec.kind, "distribution": rec.distribution, "entropy": entropy,
                          "values": (rec.values, rec.axes, "max" if rec.distribution else "absmax")}
    return {
        "head": {
            "checkpoint_id": record["id"],
            "task": task.spec(),
            "seed": seed,
            "samples": samples,
            "output_kind": task.output_kind,
            "metric_name": result.metric_name,
            "higher_is_better": result.higher_is_better,
        },
        "values": values,
        "summary": to_jsonable({
            "loss": result.loss,
            "metric": result.metric,
            "metric_per_sequence": result.metric_per_sequence,
            "chance": result.chance,
        }),
        "sites": recorded,
        "steps": int(batch.mask.shape[1]),
    }


def _answer(full: dict, window: Sequence[int] | None, max_points: int | None) -> dict:
    """The JSON answer of a whole trace, cut to `window` and pooled to `max_points`."""
    T = full["steps"]
    if window is not None and not 0 <= window[0] < window[1] <= T:
        raise Invalid(f"window {list(window)} is not within the sequence's {T} steps: give [t0, t1] with "
                      f"0 <= t0 < t1 <= {T}")
    t0, t1 = (int(window[0]), int(window[1])) if window is not None else (0, T)
    cut = (t0, t1) if window is not None else None

    def out(entry) -> dict:
        values, axes, rule = entry
        pooled, bins = reduce_labelled(values, axes, rule, cut, max_points)
        return {**labelled(pooled, axes), **({"bins": bins} if bins else {})}

    answer = {**full["head"], **{name: out(entry) for name, entry in full["values"].items()}}
    answer["summary"] = full["summary"]
    answer["sites"] = {
        name: {"kind": rec["kind"], "distribution": rec["distribution"], **out(rec["values"]),
               "entropy": out(rec["entropy"]) if rec["entropy"] else None}
        for name, rec in full["sites"].items()
    }
    answer["time"] = {"length": T, "window": [t0, t1], "bin": bin_width(t1 - t0, max_points),
                      "edges": bin_edges(t0, t1, max_points)}
    return answer


class ForwardCache:
    """Whole traces kept in a sandbox process, newest last, under a byte budget, so a zoom
    into a window of a long trace does not run the forward again. A trace larger than
    the budget is not kept."""

    def __init__(self):
        self._entries: OrderedDict[tuple, tuple[dict, int]] = OrderedDict()

    def get(self, key: tuple) -> dict | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        self._entries.move_to_end(key)
        return hit[0]

    def put(self, key: tuple, full: dict, max_bytes: int) -> None:
        size = _tensor_bytes(full)
        if size > max_bytes:
            return
        self._entries[key] = (full, size)
        while sum(s for _, s in self._entries.values()) > max_bytes:
            self._entries.popitem(last=False)


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


_forwards = ForwardCache()  # one per process: the sandbox workers' own


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
    reduce: dict | None = None,
    window: Sequence[int] | None = None,
) -> bytes:
    """The trace's JSON answer, computed in a sandbox process; 422 with a `budget` before
    anything runs when the request costs more than this server allows (priced as answered:
    windowed and reduced)."""
    record = get_or_404(store, checkpoint_id)
    task = resolve_task(record, task_name, task_params, max_int=settings.max_task_param)
    cost = budget.estimate_trace(record, task, samples, site_names(site_specs(record), list(sites)),
                                 window=window, max_points=(reduce or {}).get("max_points"))
    if window is not None and window[1] > cost.steps:  # past even the longest sequence: no forward needed to say so
        raise Invalid(f"window {list(window)} is not within the sequence's {cost.steps} steps: give [t0, t1] with "
                      f"0 <= t0 < t1 <= {cost.steps}")
    budget.check_trace(cost, settings)
    try:
        return sandbox.call(
            # waiting longer than one trace may run would only mean the sandboxes are stuck
            "trace", timeout_s=settings.trace_timeout_s, wait_s=settings.trace_timeout_s,
            max_bytes=settings.trace_max_bytes,
            record=record, path=str(store.checkpoint_path(record)), cache_models=settings.trace_cache_models,
            task_name=task_name, task_params=task_params, seed=seed, samples=samples, sites=list(sites),
            max_task_param=settings.max_task_param, reduce=reduce, window=list(window) if window else None,
            forward_cache_bytes=settings.trace_forward_cache_mb * MiB,
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
