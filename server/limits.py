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

glibc keeps freed memory for reuse: after a large block is freed it even raises the size
from which blocks are mapped on their own, so the next answers of tens of MB come from
the heap and stay there. `map_large_blocks` pins that size (the server and every worker
call it), and `trim` hands free heap pages back after a call.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache
from pathlib import Path

MiB = 1 << 20
WORKER_OOM_SCORE_ADJ = 500
LARGE_BLOCK = 1 * MiB  # blocks from this size are mapped on their own and unmapped when freed
_M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)


@lru_cache(maxsize=1)
def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def map_large_blocks(size: int = LARGE_BLOCK) -> None:
    """Large allocations (answers, tensors) go back to the system as soon as they are freed."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, int(size))


def trim() -> None:
    """Return free heap memory to the system (after a call that allocated a lot)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def confine(memory_mb: int, nice: int, threads: int) -> None:
    """Apply the worker limits to the calling process (call before importing torch)."""
    try:
        import resource

        limit = int(memory_mb) * MiB
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not Linux, or a hard limit already lower: the kernel's own limit stands
    map_large_blocks()
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
