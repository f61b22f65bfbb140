"""A job kind that exists only in the tests (tests/server/test_kinds.py adds it to an app).

Imported as the top-level module `dummy_kind` with this folder on sys.path: spawned
worker processes inherit sys.path and import its functions by reference from here.
"""
from __future__ import annotations

import os

from pydantic import ConfigDict, Field

from mnemoscope.server.kinds import JobKind
from mnemoscope.server.request_base import JobRequest

DONE: list[tuple[str, dict]] = []  # (job id, summary) for each finished dummy job, in the server process


class EchoRequest(JobRequest):
    repeat: int = Field(2, ge=1, le=5, description="how many times to echo the seed")
    label: str = Field("echo", max_length=20)

    model_config = ConfigDict(json_schema_extra={"examples": [{"repeat": 3}]})


def normalize(record: dict, body: EchoRequest, settings) -> dict:
    return {"repeat": body.repeat, "label": body.label}


def run(model, task, request: dict, progress) -> dict:
    progress(1, 1)
    return {"echo": [request["seed"]] * request["repeat"], "label": request["label"], "arch": model.arch,
            "task": task.name, "pid": os.getpid()}


def summarize(result: dict) -> dict:
    return {"echoes": len(result["data"]["echo"])}


def record_done(store, job: dict, summary: dict) -> None:
    DONE.append((job["id"], summary))


DUMMY = JobKind(
    name="dummy",
    summary="Start a dummy job",
    description="Echoes the seed; a kind declared outside the server.",
    request_model=EchoRequest,
    normalize=normalize,
    run=run,
    summarize=summarize,
    on_done=record_done,
)
