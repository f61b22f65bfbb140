"""Task parameters declared once, as a table: each field of a task's `Params` dataclass
carries its range and meaning (`param(default, low, high, doc)`), its annotation says
integer or float, and everything else is derived from that:

- validation when the dataclass is built: integers where integers are meant (a bool or
  8.0 is not one), finite numbers, each inside its range, and every `min_X` at most its
  `max_X`; a ValueError names the task, the parameter and the allowed range;
- `param_specs(Params)`, the table itself, for documentation and for callers (a server)
  that want to show or bound the ranges.

    @dataclass
    class CopyParams(TaskParams):
        bits: int = param(8, 1, 1024, "bit channels per row")
        ...
        def check(self): ...   # rules between parameters, run after the table's

Ranges are what the task can meaningfully do, not what a server is willing to run: the
sequence length is a product of parameters, and each task's `max_steps()` says how long
its sequences can get so a caller can bound that product.
"""
from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from typing import Any, ClassVar

_KINDS = {"int": int, "float": float}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: type  # int or float
    low: int | float
    high: int | float
    doc: str

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        return f"{what} in [{self.low:g}, {self.high:g}] ({self.doc})"

    def coerce(self, task: str, value: Any) -> int | float:
        """`value` as this parameter's type, or a ValueError naming the parameter and its range."""
        problem = f"{task}: {self.name} must be {self.describe()}, got {value!r:.60}"
        if isinstance(value, bool):
            raise ValueError(problem)
        if self.kind is int:
            try:
                number = operator.index(value)  # ints, numpy ints; not 8.0, not "8"
            except TypeError:
                raise ValueError(problem) from None
        else:
            if not isinstance(value, (int, float)) and not _is_numpy_number(value):
                raise ValueError(problem)
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(problem)
        if not self.low <= number <= self.high:
            raise ValueError(problem)
        return number


def _is_numpy_number(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iuf"


def param(default: int | float, low: int | float, high: int | float, doc: str) -> Any:
    """A dataclass field with its range and meaning; the annotation gives the type."""
    return dataclasses.field(default=default, metadata={"range": (low, high, doc)})


def param_specs(params_cls: type) -> dict[str, ParamSpec]:
    """The table of a `Params` dataclass: name -> ParamSpec, in declaration order."""
    specs = {}
    for f in dataclasses.fields(params_cls):
        low, high, doc = f.metadata["range"]
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        specs[f.name] = ParamSpec(f.name, _KINDS[annotation], low, high, doc)
    return specs


@dataclass
class TaskParams:
    """Base of every task's `Params`. `task_name` (for messages) is set by `register_task`."""

    task_name: ClassVar[str] = "task"

    def __post_init__(self) -> None:
        specs = param_specs(type(self))
        for name, spec in specs.items():
            setattr(self, name, spec.coerce(self.task_name, getattr(self, name)))
        for name in specs:
            if name.startswith("min_") and "max_" + name[4:] in specs:
                low, high = getattr(self, name), getattr(self, "max_" + name[4:])
                if high < low:
                    raise ValueError(f"{self.task_name}: max_{name[4:]} ({high}) must be at least {name} ({low})")
        self.check()

    def check(self) -> None:
        """Rules between parameters, once each is known to be in range."""
