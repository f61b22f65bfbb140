"""A bounded pool of worker processes for the heavy analyses.

Torch work runs in separate processes (started with "spawn", so no forked locks or torch
thread pools), so it never blocks the event loop and a job that crashes or runs out of
memory takes down one worker, not the server. The pool is managed directly rather than
through `ProcessPoolExecutor`: a running job must be cancellable (a executor cannot stop a
started task) and one dead worker must not break the whole pool.

One dispatcher thread in the server owns every worker pipe: it hands queued jobs to idle
workers, records progress and outcomes in the store, kills workers whose job was
cancelled but does not stop within the grace period or exceeds the time limit, and
replaces dead workers. Each worker has its own pipe, so killing one cannot corrupt
another's channel. Workers write results to disk themselves (atomically) and report only
that they are done, so large results never pass through the server process.

Workers confine themselves before they import torch (`limits.confine`: a memory limit
that still lets CUDA start, a higher OOM score than the server, a lower CPU priority), and
a worker whose memory grew by more than `worker_recycle_mb` over a job is replaced once
the job is done, so what a big job took goes back to the system.

Cancellation is cooperative first: the worker's progress callback checks its pipe for a
cancel message and raises; a job that does not call back in time is killed.

The pool knows nothing about what a job does: it is given `execute(kind, checkpoint_path,
request, progress) -> (result, summary)`, which every worker imports by reference (a
module-level function, or a `functools.partial` of one), and `on_done(job, summary)`,
called in the server when a job is done. With `Settings.executor` other than local, `execute`
is wrapped so that report jobs are computed on that executor while their worker waits
(server/remote_jobs.py): the queue, time limit and cancellation stay the pool's.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from .limits import MiB, confine, rss_bytes
from .remote_jobs import execute_on
from .settings import Settings
from .store import Store, now

log = logging.getLogger("mnemoscope.jobs")

PROGRESS_INTERVAL_S = 0.2


class JobCancelled(Exception):
    pass


# -- worker side ------------------------------------------------------------------------------

class _Progress:
    """The `progress` callable handed to the analysis engine. Accepts `(fraction)`,
    `(done, total)` or keyword `message=`; throttled; raises JobCancelled when a cancel
    message is waiting."""

    def __init__(self, conn: Connection, job_id: str):
        self.conn, self.job_id = conn, job_id
        self.last = 0.0

    def check_cancel(self) -> None:
        while self.conn.poll():
            msg = self.conn.recv()
            if msg[0] == "stop" or (msg[0] == "cancel" and msg[1] == self.job_id):
                raise JobCancelled()

    def __call__(self, *args, message: str | None = None, **_ignored) -> None:
        self.check_cancel()
        fraction = None
        nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        texts = [a for a in args if isinstance(a, str)]
        if len(nums) >= 2 and nums[1]:
            fraction = nums[0] / nums[1]
        elif len(nums) == 1:
            fraction = nums[0]
        message = message or (texts[0] if texts else None)
        t = time.monotonic()
        if fraction is not None and (t - self.last >= PROGRESS_INTERVAL_S or fraction >= 1):
            self.last = t
            self.conn.send(("progress", self.job_id, min(max(float(fraction), 0.0), 1.0), message))


def _worker_main(conn: Connection, threads: int, nice: int, memory_mb: int, pickled_execute: bytes) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    confine(memory_mb, nice, threads)
    # Bytes the server pickled itself (multiprocessing pickles every message on this pipe
    # anyway); unpickled only now, so the analysis imports run after the lines above.
    try:
        execute = pickle.loads(pickled_execute)
        broken = None
    except Exception as exc:  # noqa: BLE001 - e.g. a module the server imported is not importable here
        execute, broken = None, f"the worker could not load the job executor: {_describe(exc)}"
    from .store import write_json_atomic

    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        if msg[0] != "run":
            continue  # a cancel for a job that already ended
        _, job_id, kind, checkpoint_path, request, result_path = msg
        progress = _Progress(conn, job_id)
        if broken is not None:  # each job says why, instead of workers dying and respawning forever
            conn.send(("failed", job_id, broken))
            continue
        try:
            result, summary = execute(kind, Path(checkpoint_path), request, progress)
            progress.check_cancel()
            write_json_atomic(Path(result_path), result)
            conn.send(("done", job_id, summary))
        except JobCancelled:
            conn.send(("cancelled", job_id))
        except Exception as exc:  # noqa: BLE001 - the job fails, the worker lives on
            log.debug("job %s failed", job_id, exc_info=True)
            conn.send(("failed", job_id, _describe(exc)))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- server side --------------------------------------------------------------------------------

def _pickle_for_workers(execute: Callable) -> bytes:
    """The worker processes are spawned, not forked: they import `execute` (and what it is
    bound to) by reference, so a lambda or a local function is refused here, at start-up,
    rather than failing every job later."""
    try:
        return pickle.dumps(execute)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(f"the job executor must be importable by the worker processes (a module-level "
                        f"function, or a functools.partial of one with picklable arguments): {exc}") from exc


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    ready: bool = False
    job_id: str | None = None
    started: float = 0.0
    cancel_deadline: float | None = None
    extra: dict = field(default_factory=dict)


class JobManager:
    """Queue, run, cancel; job state lives in the store."""

    def __init__(self, store: Store, settings: Settings, execute: Callable[..., tuple[Any, dict]],
                 on_done: Callable[[dict, dict], None] | None = None):
        self.store = store
        self.settings = settings
        self.size = settings.workers
        if settings.executor != "local":  # report jobs computed elsewhere, waited for by the workers
            execute = partial(execute_on, settings.executor, settings.ray_address, settings.worker_threads, execute)
        self._execute = _pickle_for_workers(execute)  # execute(kind, checkpoint_path, request, progress)
        self.on_done = on_done  # callback(job: dict, summary: dict) in the dispatcher thread
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._pending: deque[str] = deque()
        self._cancels: set[str] = set()
        self._workers: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- API side (any thread) -------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="mnemoscope-jobs", daemon=True)
                self._thread.start()

    def queued(self) -> int:
        """Jobs waiting for a worker."""
        with self._lock:
            return len(self._pending)

    def submit(self, job_id: str) -> None:
        self.start()
        with self._lock:
            self._pending.append(job_id)
        self._wake()

    def cancel(self, job_id: str) -> None:
        """Stop a job whose row the caller already marked cancelled."""
        with self._lock:
            try:
                self._pending.remove(job_id)
            except ValueError:
                self._cancels.add(job_id)
        self._wake()

    def stats(self) -> dict:
        with self._lock:
            workers = list(self._workers)
            queued = len(self._pending)
        return {
            "size": self.size,
            "alive": sum(w.process.is_alive() for w in workers),
            "busy": sum(w.job_id is not None for w in workers),
            "queued": queued,
        }

    def shutdown(self, reason: str = "the server stopped while this job was running; submit it again") -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            workers, self._workers = self._workers, []
            pending, self._pending = list(self._pending), deque()
        for w in workers:
            if w.job_id is not None:
                w.process.kill()  # its job is marked failed below; waiting for it helps nobody
                continue
            try:
                w.conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for w in workers:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            if w.job_id is not None:
                self.store.update_job(w.job_id, only_if=("running",), status="failed", error=reason, finished_at=now())
            w.conn.close()
        for job_id in pending:
            self.store.update_job(job_id, only_if=("queued",), status="failed", error=reason, finished_at=now())
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are shut down

    # -- dispatcher thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the dispatcher must outlive any one bad event
                log.exception("job dispatcher error")
                time.sleep(0.1)

    def _step(self) -> None:
        self._send_cancels()
        self._check_deadlines()
        self._spawn_if_needed()
        self._assign()
        with self._lock:
            workers = list(self._workers)
        waitables: dict = {self._wake_r: None}
        for w in workers:
            waitables[w.conn] = w
            waitables[w.process.sentinel] = w
        for obj in wait(list(waitables), timeout=0.5):
            if obj == self._wake_r:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                continue
            w = waitables[obj]
            if w not in self._workers:
                continue  # already handled (its pipe and sentinel can both fire)
            if obj is w.conn:
                self._drain(w)
            elif not w.conn.poll():
                self._worker_died(w)

    def _drain(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):
            self._worker_died(w)

    def _spawn_if_needed(self) -> None:
        with self._lock:
            want = min(self.size, len(self._pending) + sum(w.job_id is not None for w in self._workers))
            missing = want - len(self._workers)
        for _ in range(max(0, missing)):
            parent, child = self._ctx.Pipe(duplex=True)
            process = self._ctx.Process(
                target=_worker_main,
                args=(child, self.settings.worker_threads, self.settings.worker_nice, self.settings.worker_memory_mb,
                      self._execute),
                name="mnemoscope-worker",
                daemon=True,
            )
            try:
                process.start()
            except Exception as exc:  # noqa: BLE001 - e.g. spawn refused during interpreter start-up
                parent.close()
                child.close()
                self._fail_pending(f"could not start a worker process: {_describe(exc)}")
                return
            child.close()
            with self._lock:
                self._workers.append(_Worker(process, parent))

    def _fail_pending(self, error: str) -> None:
        with self._lock:
            pending, self._pending = list(self._pending), deque()
        log.error("%s", error)
        for job_id in pending:
            self.store.update_job(job_id, only_if=("queued",), status="failed", error=error, finished_at=now())

    def _assign(self) -> None:
        while True:
            with self._lock:
                idle = next((w for w in self._workers if w.ready and w.job_id is None), None)
                if idle is None or not self._pending:
                    return
                job_id = self._pending.popleft()
            job = self.store.get_job(job_id)
            if job is None or job["status"] != "queued":
                continue
            record = self.store.get_checkpoint(job["checkpoint_id"])
            if record is None:
                self.store.update_job(job_id, only_if=("queued",), status="failed",
                                      error="the checkpoint was deleted", finished_at=now())
                continue
            if not self.store.update_job(job_id, only_if=("queued",), status="running", started_at=now()):
                continue
            message = ("run", job_id, job["kind"], str(self.store.checkpoint_path(record)), job["request"],
                       str(self.store.result_path(job["key"])))
            try:
                idle.conn.send(message)
            except OSError:
                self._worker_died(idle)
                self.store.update_job(job_id, status="queued", started_at=None)
                with self._lock:
                    self._pending.appendleft(job_id)
                continue
            idle.job_id, idle.started, idle.cancel_deadline = job_id, time.monotonic(), None
            idle.extra["key"] = job["key"]

    def _send_cancels(self) -> None:
        with self._lock:
            cancels, self._cancels = self._cancels, set()
            workers = list(self._workers)
        for w in workers:
            if w.job_id in cancels:
                try:
                    w.conn.send(("cancel", w.job_id))
                except OSError:
                    pass
                w.cancel_deadline = time.monotonic() + self.settings.cancel_grace_s

    def _check_deadlines(self) -> None:
        t = time.monotonic()
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            if w.job_id is None:
                continue
            if w.cancel_deadline is not None and t > w.cancel_deadline:
                log.info("job %s did not stop after cancel; killing its worker", w.job_id)
                self._kill(w)
            elif t - w.started > self.settings.job_timeout_s:
                self.store.update_job(
                    w.job_id, only_if=("running",), status="failed", finished_at=now(),
                    error=f"stopped after exceeding the job time limit of {self.settings.job_timeout_s:g} s",
                )
                self._kill(w)

    def _kill(self, w: _Worker) -> None:
        w.process.kill()
        w.process.join(timeout=5)
        self._remove(w)

    def _remove(self, w: _Worker) -> None:
        with self._lock:
            if w in self._workers:
                self._workers.remove(w)
        try:
            w.conn.close()
        except OSError:
            pass

    def _worker_died(self, w: _Worker) -> None:
        w.process.join(timeout=1)
        code = w.process.exitcode
        if w.job_id is not None:
            self.store.update_job(
                w.job_id, only_if=("running",), status="failed", finished_at=now(),
                error=f"the worker process running this job died (exit code {code}); it may have run out of memory",
            )
            log.warning("worker running job %s died with exit code %s", w.job_id, code)
        self._remove(w)

    def _recycle_if_grown(self, w: _Worker) -> None:
        """Replace an idle worker that kept much more memory than its warm size (its RSS after
        its first job, which pays torch's one-time set-up and loads a model its cache keeps),
        or four times that since it started (a first job that was itself a heavy one): what a
        big job leaves behind goes back, and ordinary jobs do not pay a fresh process each."""
        rss, limit = rss_bytes(w.process.pid), self.settings.worker_recycle_mb * MiB
        warm = w.extra.setdefault("warm_rss", rss)
        grown = max(rss - warm, (rss - w.extra.get("baseline_rss", 0)) // 4)
        if grown <= limit:
            return
        log.info("worker %s grew by %d MB over its job; replacing it", w.process.pid, grown // MiB)
        try:
            w.conn.send(("stop",))
        except OSError:
            pass
        w.process.join(timeout=5)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(timeout=5)
        self._remove(w)  # _spawn_if_needed starts a fresh one when there is work

    def _handle(self, w: _Worker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            w.ready = True
            w.extra["baseline_rss"] = rss_bytes(w.process.pid)
            return
        job_id = msg[1]
        if job_id != w.job_id:
            return  # from a job this worker was told to drop
        if kind == "progress":
            self.store.update_job(job_id, only_if=("running",), progress=msg[2], message=msg[3])
            return
        w.job_id, w.cancel_deadline = None, None
        if kind == "done":
            ok = self.store.update_job(job_id, only_if=("running",), status="done", progress=1.0,
                                       message=None, finished_at=now())
            job = self.store.get_job(job_id)
            if ok and job is not None:
                if self.on_done is not None:
                    self.on_done(job, msg[2] or {})
            elif self.store.find_job_by_key(w.extra["key"], ("done",)) is None:
                # cancelled, or its checkpoint deleted, meanwhile: nobody will read this result
                self.store.result_path(w.extra["key"]).unlink(missing_ok=True)
        elif kind == "failed":
            self.store.update_job(job_id, only_if=("running",), status="failed", error=msg[2], finished_at=now())
        elif kind == "cancelled":
            self.store.update_job(job_id, only_if=("running", "queued"), status="cancelled", finished_at=now())
        self._recycle_if_grown(w)
