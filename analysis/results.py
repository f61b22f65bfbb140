"""Typed results that serialise to plain JSON.

Every result is a dataclass holding numbers, strings, lists and tensors; `to_dict()`
turns it into JSON-able Python: tensors become nested lists, and NaN/inf (a quantity
that is undefined for that entry, e.g. the entropy of a one-key attention row) become
`None`, because JSON has no NaN.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor


def jsonable(value: Any) -> Any:
    """Recursively convert dataclasses, tensors, tuples and floats to JSON-able values."""
    if isinstance(value, Result):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Tensor):
        if value.dtype == torch.bool:
            return value.tolist()
        return _clean(value.detach().cpu().double().tolist() if value.is_floating_point() else value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return jsonable(value.item())
    return value


def _clean(x: Any) -> Any:
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class Result:
    """Mixin for result dataclasses. Fields listed in `_omit` are kept in memory (for
    callers and tests) but left out of `to_dict()` (large raw tensors)."""

    _omit: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            f.name: jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name not in self._omit
        }


def fnum(x: float | Tensor | None) -> float:
    """A Python float (NaN for None) from a number or a one-element tensor."""
    if x is None:
        return float("nan")
    if isinstance(x, Tensor):
        return float(x.detach().reshape(-1)[0]) if x.numel() else float("nan")
    return float(x)
