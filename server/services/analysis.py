"""The heavy analyses, as run inside a worker process: load the checkpoint (cached per
worker), rebuild the task from the normalised request, run the job's kind, and return a
JSON-ready result plus the kind's small summary (e.g. the report's verdict).

`execute` is handed to the job manager bound to the app's table of kinds
(`functools.partial(execute, kinds)`), so the worker needs no registry of its own.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from mnemoscope.analysis.device import resolve_device
from mnemoscope.models.checkpoints import LoadedCheckpoint, load_checkpoint
from mnemoscope.models.tasks import make_task

from .serialize import to_jsonable

if TYPE_CHECKING:
    from ..kinds import JobKind

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


def execute(kinds: Mapping[str, JobKind], kind: str, path: Path, request: dict,
            progress: Callable[..., None], device: str = "cpu") -> tuple[Any, dict]:
    """Run one job of `kinds[kind]` on `device` (`Settings.device`). Returns (result, summary)."""
    job_kind = kinds[kind]
    model = _load(path).model.to(resolve_device(device))  # in place: the cached model stays there
    task = make_task(request["task"])
    stored = {"kind": job_kind.name, "data": to_jsonable(job_kind.run(model, task, request, progress))}
    return stored, job_kind.summarize(stored)
