"""What a worker process does to itself before it touches a request, and how the server
reads the memory its processes hold.

Every process that runs a request's torch code (the job workers, the trace sandbox)
calls `confine` first:

- RLIMIT_DATA caps its private writable memory, so a request that outgrows the budget
  fails with an allocation error in that process instead of driving the machine out of
  memory. RLIMIT_DATA, not RLIMIT_AS: CUDA (and torch's allocator) reserve huge address
  ranges they never touch; only memory that can be written counts here.
- oom_score_adj 500: if the kernel must kill something anyway, a worker goes before the
  server, which then reports the job or trace as failed and starts a fresh worker.
- a lower CPU priority and a fixed number of torch threads, so the API stays responsive.

Memory is read from /proc (Linux); elsewhere these read as 0 and the limits are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

MiB = 1 << 20
WORKER_OOM_SCORE_ADJ = 500


def confine(memory_mb: int, nice: int, threads: int) -> None:
    """Apply the worker limits to the calling process (call before importing torch)."""
    try:
        import resource

        limit = int(memory_mb) * MiB
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not Linux, or a hard limit already lower: the kernel's own limit stands
    try:
        Path("/proc/self/oom_score_adj").write_text(str(WORKER_OOM_SCORE_ADJ))
    except OSError:
        pass
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    import torch

    torch.set_num_threads(threads)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of one process (0 when it is gone or /proc is missing)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`, from /proc/<pid>/task/*/children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, summed."""
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += rss_bytes(current)
        todo += children(current)
    return total
