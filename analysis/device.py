"""Which torch device an analysis runs on: CPU unless asked, and a clear error when the
device asked for is not there (rather than torch's own, deep inside the first forward)."""
from __future__ import annotations

import torch

DEVICE_HELP = '"cpu" (the default), "cuda" or "cuda:N"'


def resolve_device(name: str) -> torch.device:
    """`"cpu"`, `"cuda"` or `"cuda:N"` as a torch device; a ValueError that says what this
    machine has when CUDA (or that GPU) is not available."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {name!r}; use {DEVICE_HELP}") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {name!r} is not supported; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        raise ValueError(f"device {name!r} was asked for but CUDA is not available on this machine ({build}, "
                         f"torch {torch.__version__}); run on the CPU (the default) or on a machine with a GPU")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    return device
