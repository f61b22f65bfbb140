"""Python values to JSON values: the one converter behind checkpoint metadata, analysis
results and the server's answers.

    to_jsonable({"loss": torch.tensor(0.25), "bad": float("nan")})  # {"loss": 0.25, "bad": None}

Tensors become nested lists of their shape (a 0-d tensor a number), floating tensors at
full precision (float32 with the 9 significant digits that identify each value); NaN and infinities become None, because JSON has neither. Mappings get
string keys; tuples, lists and sets become lists (sets sorted, so the output is stable);
enums their value; paths strings; numpy arrays and scalars lists and numbers.

Objects say how they look in JSON in this order: `for_json()` (simplejson's convention;
analysis results use it to leave out raw tensors and add summaries), pydantic's
`model_dump()`, a dataclass's fields, then `to_dict()`. Fields come before `to_dict()` so a
dataclass nested inside a result shows every field as it holds it.

Anything else becomes `str(value)`, so an answer never fails on an odd value, or, with
`strict=True`, raises TypeError naming the type (checkpoint metadata, where a silent
repr would be stored for good).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import torch
from torch import Tensor


def to_jsonable(value: Any, *, strict: bool = False) -> Any:
    """`value` as JSON values (dict, list, str, int, float, bool, None); see the module doc."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):  # numpy's float64 too: it subclasses float
        return value if math.isfinite(value) else None
    if isinstance(value, Tensor):
        return tensor_data(value)

    def convert(v: Any) -> Any:
        return to_jsonable(v, strict=strict)

    if isinstance(value, Mapping):
        return {str(k): convert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [convert(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((convert(v) for v in value), key=repr)
    if isinstance(value, enum.Enum):
        return convert(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if callable(getattr(value, "for_json", None)):
        return convert(value.for_json())
    if callable(getattr(value, "model_dump", None)):  # pydantic
        return convert(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "to_dict", None)):
        return convert(value.to_dict())
    if callable(getattr(value, "tolist", None)):  # numpy arrays and scalars
        return convert(value.tolist())
    if callable(getattr(value, "item", None)):
        return convert(value.item())
    if strict:
        raise TypeError(f"a {type(value).__name__} has no JSON form: {value!r:.80}")
    return str(value)


def tensor_data(t: Tensor) -> Any:
    """A tensor as nested lists (a 0-d tensor as a number); non-finite floats become None.
    Floating tensors go through float64, which holds every narrower float exactly; a float32 (or
    narrower) value is written with the 9 significant digits that identify it (`_shortest`)."""
    t = t.detach().cpu()
    if not t.is_floating_point():
        return t.tolist()  # bool and integer tensors: nothing to clean
    data = (t.double() if t.dtype == torch.float64 else _shortest(t)).tolist()
    return data if bool(torch.isfinite(t).all()) else _finite_or_none(data)


def _shortest(t: Tensor) -> Tensor:
    """float64 values with 9 significant digits, each converting back to exactly the float32 it came
    from (9 digits identify every float32). Widened as they are, float32 values print with 17 digits
    of which the last 8 are noise: the JSON of a trace was 35% larger and took 2.5x as long to write
    (bench/hf_trace.py). A value the rounding would change (none known) keeps its exact float64."""
    exact = t.double()
    magnitude = torch.floor(torch.log10(exact.abs().clamp(min=1e-300)))
    scale = torch.pow(10.0, 8 - magnitude)
    rounded = torch.round(exact * scale) / scale
    same = (rounded.to(t.dtype) == t) & torch.isfinite(rounded)
    return torch.where(same, rounded, exact)


def _finite_or_none(data: Any) -> Any:
    if isinstance(data, list):
        return [_finite_or_none(v) for v in data]
    return data if math.isfinite(data) else None


__all__ = ["to_jsonable", "tensor_data"]
