"""What the sandbox processes run (server/sandbox.py): each handler takes plain
arguments and returns its answer as JSON bytes, so the API process only passes bytes on.

`trace` calls the trace service as the API process used to, on the one checkpoint the
request is about; the models it loads stay cached in this process (at most
`cache_models` of them), and so do the whole forwards of its latest traces
(services/trace.py `ForwardCache`). `validate` checks an uploaded file with the safe loader;
`import_archive` makes an uploaded Hugging Face archive into a checkpoint (services/hf_archive.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoints import validate as validate_file
from .hf_archive import convert_archive
from .models import ModelCache
from .trace import trace as trace_service

_models: ModelCache | None = None


class _OneCheckpoint:
    """The store as the trace service sees it, holding only the request's checkpoint
    (the sandbox never opens the index)."""

    def __init__(self, record: dict, path: str):
        self.record, self.path = record, Path(path)

    def get_checkpoint(self, checkpoint_id: str) -> dict | None:
        return self.record if checkpoint_id == self.record["id"] else None

    def checkpoint_path(self, record: dict) -> Path:
        return self.path


def _cache(size: int) -> ModelCache:
    global _models
    if _models is None or _models.max_checkpoints != size:
        _models = ModelCache(max_checkpoints=size, replicas=1)  # one call at a time in this process
    return _models


def to_json_bytes(value: Any) -> bytes:
    """The answer as FastAPI's JSONResponse would write it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def trace(record: dict, path: str, cache_models: int, **request: Any) -> bytes:
    answer = trace_service(_OneCheckpoint(record, path), _cache(cache_models), record["id"], **request)
    return to_json_bytes(answer)


def validate(path: str, display: str) -> bytes:
    return to_json_bytes(validate_file(Path(path), display))


def import_archive(**request: Any) -> bytes:
    return to_json_bytes(convert_archive(**request))


HANDLERS = {"trace": trace, "validate": validate, "import_archive": import_archive}
