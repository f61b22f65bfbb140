"""Report jobs sent to an executor (`Settings.executor`, server/executors.py): a server on a
laptop has its heavy report jobs computed on a Ray cluster.

The job pool (server/jobs.py) stays in charge: a job worker takes the job from the queue as
always, then, instead of running the analysis itself, ships it -- the checkpoint's bytes and
the normalised request, so the cluster needs none of the server's disk -- as one task, and
waits for its result. So a remote job has the local one's budget (checked before it is
queued), time limit and cancellation: while it waits, the worker polls its progress callback,
which raises on a cancel and cancels the task; a worker killed for its time limit (or a cancel
it did not honour in time) takes its Ray driver with it, and Ray stops the tasks a dead driver
owned. The worker writes the result where a local job's goes, so caching, the verdict badge and
the API see no difference.

Only the report kind goes out: the other kinds are interactive and small, and would pay for
shipping the checkpoint on every call.
"""
from __future__ import annotations

import atexit
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

from .executors import Executor, make_executor
from .kinds.report import REPORT

REMOTE_KINDS = (REPORT.name,)
_ENGINES: dict[tuple[str, str | None], Executor] = {}  # per worker process: one Ray connection, kept


def _engine(name: str, address: str | None) -> Executor:
    engine = _ENGINES.get((name, address))
    if engine is None:
        engine = make_executor(name, address=address, workers=1)
        engine.__enter__()
        atexit.register(engine.__exit__, None, None, None)
        _ENGINES[(name, address)] = engine
    return engine


def execute_on(executor: str, address: str | None, threads: int, execute: Callable[..., tuple[Any, dict]],
               kind: str, path: Path, request: dict, progress: Callable[..., None]) -> tuple[Any, dict]:
    """The job manager's `execute` with the same signature, bound (functools.partial) to the
    executor's name and address, the torch threads of a job and the local `execute`."""
    if executor == "local" or kind not in REMOTE_KINDS:
        return execute(kind, path, request, progress)
    unit = {"kind": kind, "file": path.name, "checkpoint": path.read_bytes(), "request": request, "threads": threads}
    progress(0.0, message=f"sent to the {executor} executor")
    return _engine(executor, address).run_one(partial(run_remote, execute), unit, {"num_cpus": threads},
                                              poll=progress)


def run_remote(execute: Callable[..., tuple[Any, dict]], unit: dict) -> tuple[Any, dict]:
    """One job where the executor runs it: the checkpoint from its bytes, the local job's
    torch threads, no progress (the server's worker does the waiting)."""
    import torch

    torch.set_num_threads(unit["threads"])
    with tempfile.TemporaryDirectory(prefix="mnemoscope-job-") as tmp:
        path = Path(tmp) / unit["file"]
        path.write_bytes(unit["checkpoint"])
        return execute(unit["kind"], path, unit["request"], _no_progress)


def _no_progress(*_args, **_kwargs) -> None:
    pass


__all__ = ["REMOTE_KINDS", "execute_on", "run_remote"]
