"""The heavy analyses, as run inside a worker process: load the checkpoint (cached per
worker), rebuild the task from the normalised request, call `mnemoscope.analysis`, and
return a JSON-ready result plus a small summary for the index (the report's verdict)."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from mnemoscope.analysis.ablation import AblationSpec, run_ablations
from mnemoscope.analysis.gradients import gradient_flow
from mnemoscope.analysis.patching import patch_sweep
from mnemoscope.analysis.report import analyze
from mnemoscope.models.checkpoints import LoadedCheckpoint, load_checkpoint
from mnemoscope.models.tasks import make_task

from .serialize import to_jsonable

JOB_KINDS = ("ablations", "patching", "gradients", "report")
_CACHE: OrderedDict[str, LoadedCheckpoint] = OrderedDict()
_CACHE_SIZE = 2


def _load(path: Path) -> LoadedCheckpoint:
    key = str(path)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    loaded = load_checkpoint(path)
    _CACHE[key] = loaded
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return loaded


def execute(kind: str, path: Path, request: dict, progress: Callable[[float], None]) -> tuple[Any, dict]:
    """Run one job. Returns (result, summary)."""
    model = _load(path).model
    task = make_task(request["task"])
    seed = request["seed"]
    if kind == "ablations":
        batch = task.sample(request["samples"], seed)
        specs = [AblationSpec(**spec) for spec in request["specs"]]
        data = run_ablations(model, task, batch, specs, seed=seed, progress=progress)
    elif kind == "patching":
        pair = task.patch_pairs(request["pairs"], seed)
        data = patch_sweep(model, task, pair, request["sites"], direction=request["direction"],
                           per_element=request["per_element"], memory_budget_mb=request["memory_budget_mb"],
                           progress=progress)
    elif kind == "gradients":
        batch = task.sample(request["samples"], seed)
        data = gradient_flow(model, task, batch, progress=progress)
    elif kind == "report":
        data = analyze(model, task, samples=request["samples"], seed=seed, progress=progress)
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    result = to_jsonable(data)
    if kind == "patching" and isinstance(result, dict):
        # how many pairs' answers differ at each timestep: the dashboard marks those columns
        result["differs_per_step"] = pair.differs.sum(0).tolist()
    stored = {"kind": kind, "data": result}
    return stored, report_summary(stored) if kind == "report" else {}


def report_summary(result: dict) -> dict:
    """The verdict and score of a stored report result (for the checkpoint's badge)."""
    data = result.get("data") if isinstance(result, dict) else None
    reliance = data.get("reliance") if isinstance(data, dict) else None
    reliance = reliance if isinstance(reliance, dict) else {}
    verdict, score = reliance.get("verdict"), reliance.get("score")
    return {
        "verdict": verdict if isinstance(verdict, str) else None,
        "score": float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
    }
