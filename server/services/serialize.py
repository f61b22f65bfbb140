"""Analysis results and tensors to plain JSON: the values through the one converter
(`mnemoscope.models.jsonable`: nested lists, NaN and infinities as null), and tensors
labelled with their axes for the dashboard."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from mnemoscope.models.jsonable import tensor_data, to_jsonable

__all__ = ["labelled", "tensor_data", "to_jsonable"]


def labelled(t: Tensor, axes: Sequence[str]) -> dict:
    """`{"axes": [...], "shape": [...], "data": nested lists}`."""
    axes = list(axes)
    if len(axes) != t.dim():
        # a site whose declared axes do not match what it produced: label generically
        axes = [*axes[: t.dim()], *(f"dim{i}" for i in range(len(axes), t.dim()))][: t.dim()]
    return {"axes": axes, "shape": list(t.shape), "data": tensor_data(t)}
