"""Analysis results and tensors to plain JSON: nested lists, NaN and infinities as null
(JSON has neither), tensors labelled with their axes."""
from __future__ import annotations

import dataclasses
import enum
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor


def _clean_floats(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_clean_floats(v) for v in value]
    return value


def tensor_data(t: Tensor) -> Any:
    """Nested lists; non-finite floats become None."""
    t = t.detach().cpu()
    if t.dtype == torch.bool:
        return t.tolist()
    if t.is_floating_point():
        t = t.float()
        data = t.tolist()
        return data if bool(torch.isfinite(t).all()) else _clean_floats(data)
    return t.tolist()


def labelled(t: Tensor, axes: Sequence[str]) -> dict:
    """`{"axes": [...], "shape": [...], "data": nested lists}`."""
    axes = list(axes)
    if len(axes) != t.dim():
        # a site whose declared axes do not match what it produced: label generically
        axes = [*axes[: t.dim()], *(f"dim{i}" for i in range(len(axes), t.dim()))][: t.dim()]
    return {"axes": axes, "shape": list(t.shape), "data": tensor_data(t)}


def to_jsonable(value: Any) -> Any:
    """Results of the analysis engine (pydantic models, dataclasses, tensors, numpy) to JSON values."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Tensor):
        return tensor_data(value) if value.dim() else to_jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):  # pydantic
        return to_jsonable(value.model_dump())
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    return str(value)
