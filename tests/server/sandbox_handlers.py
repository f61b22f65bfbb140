"""Sandbox handlers that exist only in the tests (tests/server/test_sandbox.py).

Imported as the top-level module `sandbox_handlers` with this folder on sys.path, so the
sandbox processes import them by reference, as they import the server's own handlers.
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from mnemoscope.server.errors import Invalid

_HELD: list[bytearray] = []


def _json(value) -> bytes:
    return json.dumps(value).encode()


def whoami() -> bytes:
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    return _json({"pid": os.getpid(), "rlimit_data": [soft, hard], "nice": os.nice(0),
                  "oom_score_adj": int(Path("/proc/self/oom_score_adj").read_text())})


def sleep(seconds: float, started: str | None = None) -> bytes:
    if started:
        Path(started).write_text("started")
    time.sleep(seconds)
    return _json({"slept": seconds})


def allocate(mb: int) -> bytes:
    import torch

    data = torch.ones(mb * 2**18)  # mb MiB of float32
    return _json({"sum": float(data.sum())})


def answer(size: int) -> bytes:
    return b"x" * size


def hold(mb: int) -> bytes:
    _HELD.append(bytearray(mb << 20))  # written (zeroed) pages: resident until the process ends
    return _json({"pid": os.getpid()})


def refuse(reason: str) -> bytes:
    raise Invalid(reason, extra={"budget": {"limit": "test"}})


def crash() -> bytes:
    os._exit(3)


HANDLERS = {f.__name__: f for f in (whoami, sleep, allocate, answer, hold, refuse, crash)}
