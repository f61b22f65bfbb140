"""Loaded models kept in memory for synchronous traces.

Recording attaches a bus to the model object, so one model instance serves one forward
pass at a time; each checkpoint gets up to `replicas` copies so that concurrent traces
of the same model run side by side instead of queueing.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.sites import SiteModel

from ..errors import Unavailable

WAIT_S = 30.0


class _Entry:
    def __init__(self, path: Path, replicas: int):
        self.path = path
        self.slots = threading.BoundedSemaphore(replicas)
        self.free: list[SiteModel] = []
        self.lock = threading.Lock()

    def acquire(self) -> SiteModel:
        if not self.slots.acquire(timeout=WAIT_S):
            raise Unavailable("the server is busy tracing this model; try again shortly")
        try:
            with self.lock:
                if self.free:
                    return self.free.pop()
            # a fresh load, not a deepcopy of an instance that may be mid-forward with its
            # hooks attached; there are at most `replicas` instances
            return load_checkpoint(self.path).model
        except BaseException:
            self.slots.release()
            raise

    def release(self, model: SiteModel) -> None:
        with self.lock:
            self.free.append(model)
        self.slots.release()


class ModelCache:
    def __init__(self, max_checkpoints: int = 4, replicas: int = 2):
        self.max_checkpoints = max_checkpoints
        self.replicas = replicas
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, key: str, path: Path) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(path, self.replicas)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_checkpoints:
                self._entries.popitem(last=False)  # borrowers keep their instance alive
            return entry

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    @contextmanager
    def borrow(self, key: str, path: Path) -> Iterator[SiteModel]:
        """A model instance for the checkpoint stored at `path` (key: its sha256)."""
        entry = self._entry(key, path)
        model = entry.acquire()
        try:
            yield model
        finally:
            entry.release(model)
