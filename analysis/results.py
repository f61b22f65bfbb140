"""Typed results that serialise to plain JSON.

Every result is a dataclass holding numbers, strings, lists and tensors; `to_dict()`
turns it into JSON-able Python: tensors become nested lists, and NaN/inf (a quantity
that is undefined for that entry, e.g. the entropy of a one-key attention row) become
`None`, because JSON has no NaN. The conversion is `mnemoscope.models.jsonable`'s, the
same the server and checkpoint metadata use.
"""
from __future__ import annotations

import dataclasses

from torch import Tensor

from ..models.jsonable import to_jsonable as jsonable  # the name the analysis modules use


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

    def for_json(self) -> dict:
        """What the converter shows of a result, wherever it is nested: `to_dict()`, not
        every field (subclasses' `to_dict` leave out raw tensors and add summaries)."""
        return self.to_dict()


def fnum(x: float | Tensor | None) -> float:
    """A Python float (NaN for None) from a number or a one-element tensor."""
    if x is None:
        return float("nan")
    if isinstance(x, Tensor):
        return float(x.detach().reshape(-1)[0]) if x.numel() else float("nan")
    return float(x)
