"""Where heavy work runs: one interface, two engines, for sweeps (cli/sweep.py) and the
server's analysis jobs (`Settings.executor`, server/remote_jobs.py).

    with make_executor("local", workers=2) as ex:         # a process pool on this machine
        for result in ex.map_unordered(fn, units, resources):
            ...
    with make_executor("ray", address="ray://head:10001") as ex:   # Ray tasks on a cluster
        ...

    with make_executor("ray", address="head:6379") as ex:  # one unit, stoppable while it runs
        result = ex.run_one(fn, unit, resources, poll=check_cancel)

`fn` must be a module-level function or a functools.partial of one (both engines ship it by
reference) and each unit and result plain data. Results come back as they finish, in any order; the caller writes them,
so a remote worker never needs the caller's disk. An interrupt (Ctrl-C) stops the work in
flight: the local pool's processes are terminated, Ray's tasks cancelled.

Ray is an optional extra (`pip install "mnemoscope[ray]"`). Without an address, a local Ray
instance is started for the sweep and stopped after it, with usage statistics off. On
machines that may send traffic only to loopback, run it inside a network namespace of its
own (README, "Sweeps"): Ray's processes talk over the external interface even when told
127.0.0.1.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any, Callable, Iterable, Iterator, Protocol

EXECUTORS = ("local", "ray")
POLL_S = 0.2  # how often run_one asks its caller whether to go on


class Executor(Protocol):
    name: str

    def map_unordered(self, fn: Callable[[Any], Any], units: Iterable[Any],
                      resources: dict[str, float]) -> Iterator[Any]: ...

    def run_one(self, fn: Callable[[Any], Any], unit: Any, resources: dict[str, float], *,
                poll: Callable[[], None] | None = None, poll_s: float = POLL_S) -> Any: ...

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _ignore_sigint() -> None:
    # the parent decides what an interrupt means (terminate the pool); a worker that raised
    # KeyboardInterrupt itself would only garble the pool's result queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """A pool of `workers` processes (spawned: no torch state is forked); with one worker the
    units run in this process, which is simpler to interrupt and to debug."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers or default_workers()
        self._pool = None

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()  # stops work in flight on an interrupt; a no-op when all is done
            self._pool.join()
            self._pool = None

    def map_unordered(self, fn, units, resources):
        units = list(units)
        if self.workers == 1 or len(units) <= 1:
            for unit in units:
                yield fn(unit)
            return
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(min(self.workers, len(units)), initializer=_ignore_sigint)
        yield from self._pool.imap_unordered(fn, units)
        self._pool.close()
        self._pool.join()
        self._pool = None


    def run_one(self, fn, unit, resources, *, poll=None, poll_s=POLL_S):
        """fn(unit) in this process (the caller's own process is the one that can be stopped)."""
        return fn(unit)


class RayExecutor:
    """Each unit a Ray task with the sweep's num_cpus/num_gpus, on the cluster at `address` or
    on a local instance of `workers` CPUs started here (and shut down at the end)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address = address
        self.workers = workers or default_workers()
        self._ray = None
        self._refs: list = []

    def __enter__(self) -> "RayExecutor":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError('the ray executor needs Ray: pip install "mnemoscope[ray]"') from exc
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
        self._ray = ray
        return self

    def __exit__(self, *exc) -> None:
        ray, self._ray = self._ray, None
        if ray is None:
            return
        for ref in self._refs:  # interrupted: the cluster should not go on with our work
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
        ray.shutdown()

    def map_unordered(self, fn, units, resources):
        ray = self._ray
        task = ray.remote(num_cpus=resources.get("num_cpus", 1), num_gpus=resources.get("num_gpus", 0),
                          max_retries=0)(fn)
        self._refs = [task.remote(unit) for unit in units]
        while self._refs:
            done, self._refs = ray.wait(self._refs, num_returns=1)
            yield ray.get(done[0])


    def run_one(self, fn, unit, resources, *, poll=None, poll_s=POLL_S):
        """fn(unit) as one Ray task; `poll()` is called every poll_s seconds while it runs, and
        whatever it raises (a cancellation) cancels the task and propagates."""
        ray = self._ray
        task = ray.remote(num_cpus=resources.get("num_cpus", 1), num_gpus=resources.get("num_gpus", 0),
                          max_retries=0)(_apply)  # Ray decorates functions only, fn may be a partial
        ref = task.remote(fn, unit)
        self._refs = [ref]
        try:
            while not ray.wait([ref], timeout=poll_s)[0]:
                if poll is not None:
                    poll()
            return ray.get(ref)
        except BaseException:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
            raise
        finally:
            self._refs = []


def _apply(fn: Callable[[Any], Any], unit: Any) -> Any:
    return fn(unit)


def make_executor(name: str, *, workers: int | None = None, address: str | None = None) -> Executor:
    if name == "local":
        if address:
            raise ValueError("--ray-address goes with --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address, workers)
    raise ValueError(f"unknown executor {name!r}; choose from {list(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "default_workers"]
