"""A small pool of sandbox processes for the work a request triggers synchronously:
traces, and validating an uploaded file. None of it runs in the API process, so a
request that is heavier than its estimate, or a hostile file, costs a worker its
memory or its life, never the server its responsiveness.

Each worker comes from multiprocessing's fork server (a clean process started once, which
imports the handlers' modules and torch ahead, so a worker starts in milliseconds without
inheriting the server's threads or locks; plain spawn where there is no fork server),
confines itself (`limits.confine`: a memory limit,
a higher OOM score, a lower CPU priority) and then runs one call at a time:
`handlers[op](**kwargs)` returns the answer as bytes (JSON), which go back over the
worker's own pipe. The server side waits on that pipe from the request's thread (never
the event loop) with a time limit; a worker that runs past it, dies or answers more
bytes than allowed is killed and replaced. After an answer, a worker whose memory grew
by more than `worker_recycle_mb` since it started is replaced too, so what a big
trace took is returned to the system.

Messages from a worker are JSON (a header line, then the payload), never pickles: the
worker handles hostile input, so the server trusts nothing it sends beyond its shape.
Messages to a worker are pickled by multiprocessing (the server's own objects).

    sandbox = Sandbox(settings, handlers={"trace": isolated.trace})
    body = sandbox.call("trace", timeout_s=30, max_bytes=64 << 20, record=..., ...)
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import pickle
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable, Mapping

from .errors import ServiceError, Unavailable, from_status
from .limits import MiB, confine, rss_bytes, trim
from .settings import Settings

log = logging.getLogger("mnemoscope.sandbox")

START_TIMEOUT_S = 120.0  # spawning imports torch: seconds on a busy machine
RETRY_AFTER_S = 5
_HEADER_SLACK = 64 * 1024


class SandboxFailure(Exception):
    """A call that produced no answer; the caller turns it into a response that says why."""


class CallTimeout(SandboxFailure):
    def __init__(self, seconds: float):
        super().__init__(f"stopped after {seconds:g} s")
        self.seconds = seconds


class AnswerTooLarge(SandboxFailure):
    def __init__(self, size: int):
        super().__init__(f"the answer is {size} bytes")
        self.size = size


class OutOfMemory(SandboxFailure):
    """The call hit the worker's memory limit (an allocation failed)."""


class WorkerDied(SandboxFailure):
    pass


# -- worker side ----------------------------------------------------------------------------------

def _worker_main(conn: Connection, pickled_handlers: bytes, memory_mb: int, nice: int, threads: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    confine(memory_mb, nice, threads)
    handlers = pickle.loads(pickled_handlers)  # bytes the server pickled itself
    _send(conn, {"ready": True, "rss": rss_bytes()})
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        op, kwargs, max_bytes = message
        try:
            payload = handlers[op](**kwargs)
            trim()  # what the call built beside its answer is free now
        except ServiceError as exc:
            _send(conn, {"status": exc.status_code, "detail": exc.message, "extra": exc.extra, "rss": rss_bytes()})
            continue
        except Exception as exc:  # noqa: BLE001 - the call fails, the worker lives on (or is recycled)
            if _is_out_of_memory(exc):
                _send(conn, {"failure": "memory", "rss": rss_bytes()})
            else:
                log.debug("sandbox call %s failed", op, exc_info=True)
                _send(conn, {"status": 500, "detail": f"the {op} failed: {type(exc).__name__}: {exc}"[:2000],
                             "rss": rss_bytes()})
            continue
        if len(payload) > max_bytes:
            _send(conn, {"failure": "size", "size": len(payload), "rss": rss_bytes()})
            continue
        _send(conn, {"status": 200, "rss": rss_bytes()}, payload)


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch's CPU allocator raises RuntimeError("... can't allocate memory ..."); Python MemoryError
    return isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "not enough memory" in str(exc)


def _send(conn: Connection, header: dict, payload: bytes = b"") -> None:
    conn.send_bytes(json.dumps(header).encode() + b"\n" + payload)


# -- server side ------------------------------------------------------------------------------------

class _Worker:
    def __init__(self, ctx, pickled: bytes, settings: Settings):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_worker_main,
            args=(child, pickled, settings.worker_memory_mb, settings.worker_nice, settings.worker_threads),
            name="mnemoscope-sandbox", daemon=True,
        )
        self.process.start()
        child.close()
        self.baseline: int | None = None  # RSS once started, to see how much a call left behind
        self.warm: int | None = None  # RSS after the first call: torch's one-time set-up and a cached model
        self.rss = 0

    def _receive(self, timeout_s: float, max_bytes: int) -> tuple[dict, bytes]:
        if not self.conn.poll(timeout_s):
            raise CallTimeout(timeout_s)
        try:
            raw = self.conn.recv_bytes(max_bytes + _HEADER_SLACK)
        except (EOFError, OSError) as exc:  # died, or more bytes than it may send
            raise WorkerDied(f"the sandbox process exited (code {self.process.exitcode})") from exc
        head, _, payload = raw.partition(b"\n")
        try:
            header = json.loads(head)
            self.rss = int(header.get("rss") or 0)
        except (ValueError, TypeError, AttributeError) as exc:
            raise WorkerDied("the sandbox process sent a malformed answer") from exc
        return header, payload

    def wait_ready(self) -> None:
        if self.baseline is None:
            header, _ = self._receive(START_TIMEOUT_S, 0)
            if not header.get("ready"):
                raise WorkerDied("the sandbox process did not start")
            self.baseline = self.rss

    def call(self, op: str, kwargs: dict, timeout_s: float, max_bytes: int) -> bytes:
        self.wait_ready()
        try:
            self.conn.send((op, kwargs, max_bytes))
        except (OSError, ValueError) as exc:
            raise WorkerDied("the sandbox process is gone") from exc
        header, payload = self._receive(timeout_s, max_bytes)
        if self.warm is None:
            self.warm = self.rss
        failure = header.get("failure")
        if failure == "memory":
            raise OutOfMemory()
        if failure == "size":
            raise AnswerTooLarge(int(header["size"]))
        status = int(header.get("status", 500))
        if status != 200:
            extra = header.get("extra")
            raise from_status(status, str(header.get("detail", "the sandbox call failed")),
                              extra if isinstance(extra, dict) else None)
        return payload

    def grew_by(self) -> int:
        return self.rss - (self.baseline or self.rss)

    def should_recycle(self, recycle_bytes: int) -> bool:
        """What a call left behind: more than `recycle_bytes` over the warm size (after the first
        call, which pays torch's one-time set-up and loads a model the cache keeps), or more
        than four times that since the start (a first call that was itself a heavy one)."""
        warm_growth = self.rss - (self.warm if self.warm is not None else self.rss)
        return warm_growth > recycle_bytes or self.grew_by() > 4 * recycle_bytes

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        try:
            self.conn.close()
        except OSError:
            pass


def _context(preload: set[str]):
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(sorted(preload))  # only has an effect before the fork server starts
    return ctx


class Sandbox:
    """`trace_workers` sandbox processes, started on first use; at most `trace_queue`
    calls wait for one, further calls are refused at once with 503."""

    def __init__(self, settings: Settings, handlers: Mapping[str, Callable[..., bytes]]):
        self.settings = settings
        self.size = settings.trace_workers
        try:
            self._pickled = pickle.dumps(dict(handlers))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(f"sandbox handlers must be module-level functions: {exc}") from exc
        self._ctx = _context({"torch", *(fn.__module__ for fn in handlers.values())})
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._waiting = 0
        self._closed = False

    def call(self, op: str, *, timeout_s: float, max_bytes: int, wait_s: float = 30.0, **kwargs: Any) -> bytes:
        """Run `handlers[op](**kwargs)` in a sandbox process and return its bytes. Raises the
        handler's ServiceError as it was, SandboxFailure subclasses for a call that gave no
        answer, and Unavailable when every sandbox is busy and too many calls wait."""
        worker = self._acquire(wait_s)
        keep = False
        try:
            payload = worker.call(op, kwargs, timeout_s, max_bytes)
            keep = True
            return payload
        except (ServiceError, AnswerTooLarge):
            keep = True  # it answered; the memory check below still applies
            raise
        finally:
            self._release(worker, keep)

    def _acquire(self, wait_s: float) -> _Worker:
        with self._cond:
            if self._closed:
                raise Unavailable("the server is shutting down")
            if not self._idle and len(self._busy) + self._starting >= self.size:
                if self._waiting >= self.settings.trace_queue:
                    raise Unavailable(f"the server is busy: {self.size} traces are running and "
                                      f"{self._waiting} waiting; try again in a few seconds",
                                      headers={"Retry-After": str(RETRY_AFTER_S)})
                self._waiting += 1
                try:
                    free = self._cond.wait_for(
                        lambda: self._closed or self._idle or len(self._busy) + self._starting < self.size, wait_s)
                finally:
                    self._waiting -= 1
                if not free or self._closed:
                    raise Unavailable(f"the server stayed busy for {wait_s:g} s; try again shortly",
                                      headers={"Retry-After": str(RETRY_AFTER_S)})
            if self._idle:
                worker = self._idle.pop()
                self._busy.add(worker)
                return worker
            self._starting += 1
        try:
            worker = _Worker(self._ctx, self._pickled, self.settings)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            self._busy.add(worker)
        return worker

    def _release(self, worker: _Worker, keep: bool) -> None:
        recycle = keep and worker.should_recycle(self.settings.worker_recycle_mb * MiB)
        if recycle:
            log.info("sandbox process %s grew by %d MB; replacing it", worker.process.pid, worker.grew_by() // MiB)
        if not keep or recycle:
            (worker.stop if keep else worker.kill)()
        with self._cond:
            self._busy.discard(worker)
            if keep and not recycle and not self._closed:
                self._idle.append(worker)
            self._cond.notify()
        if recycle and not self._closed:
            self._prestart()

    def _prestart(self) -> None:
        """Start a replacement now, so the next call does not wait for it to spawn."""
        with self._cond:
            if self._closed or len(self._idle) + len(self._busy) + self._starting >= self.size:
                return
            self._starting += 1
        try:
            worker = _Worker(self._ctx, self._pickled, self.settings)
        except Exception:  # noqa: BLE001 - the next call starts one itself
            log.exception("could not start a sandbox process")
            with self._cond:
                self._starting -= 1
            return
        with self._cond:
            self._starting -= 1
            self._idle.append(worker)
            self._cond.notify()

    def pids(self) -> list[int]:
        with self._cond:
            return [w.process.pid for w in (*self._idle, *self._busy) if w.process.pid]

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._cond.notify_all()
        for worker in idle:
            worker.stop()
        for worker in busy:  # their callers get WorkerDied
            worker.kill()
