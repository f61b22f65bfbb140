"""The one JSON converter: every kind of value it meets in checkpoints, results and answers."""
import dataclasses
import enum
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from mnemoscope.models.jsonable import tensor_data, to_jsonable


class Colour(enum.Enum):
    RED = "red"


class Point(BaseModel):
    x: float
    y: float


@dataclasses.dataclass
class Spec:
    name: str
    label: str | None = None

    def to_dict(self) -> dict:  # a dataclass shows its fields, not this
        return {"name": self.name, "label": self.label or "described"}


@dataclasses.dataclass
class Summarised:
    raw: torch.Tensor

    def for_json(self) -> dict:  # the object's own JSON form wins over its fields
        return {"mean": self.raw.mean()}


class HasToDict:
    def to_dict(self) -> dict:
        return {"k": (1, 2)}


def test_numbers_and_non_finite_floats():
    assert to_jsonable({"a": 1, "b": 2.5, "c": float("nan"), "d": float("-inf"), "e": True, "f": None}) == \
        {"a": 1, "b": 2.5, "c": None, "d": None, "e": True, "f": None}


def test_tensors_keep_their_shape_and_precision():
    assert to_jsonable(torch.tensor(0.25)) == 0.25
    assert to_jsonable(torch.tensor([1.5])) == [1.5]
    assert to_jsonable(torch.tensor([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert to_jsonable(torch.tensor([True, False])) == [True, False]
    assert to_jsonable(torch.tensor([0.1], dtype=torch.float64)) == [0.1]  # not rounded to float32
    assert to_jsonable(torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])) == [[1.0, None], [None, 2.0]]
    assert to_jsonable(torch.tensor(float("nan"))) is None
    assert tensor_data(torch.ones(2, requires_grad=True) * 2) == [2.0, 2.0]


def test_numpy_values():
    assert to_jsonable({"f": np.float32(1.5), "n": np.float64("nan"), "i": np.int64(3), "a": np.arange(3),
                        "b": np.bool_(True)}) == {"f": 1.5, "n": None, "i": 3, "a": [0, 1, 2], "b": True}


def test_containers_enums_and_paths():
    value = {5: (1, (2, float("inf"))), "s": {3, 1, 2}, "e": Colour.RED, "p": Path("/x/y")}
    assert to_jsonable(value) == {"5": [1, [2, None]], "s": [1, 2, 3], "e": "red", "p": "/x/y"}


def test_objects_in_order_for_json_pydantic_fields_to_dict():
    assert to_jsonable(Summarised(torch.tensor([1.0, 3.0]))) == {"mean": 2.0}
    assert to_jsonable(Point(x=1, y=float("nan"))) == {"x": 1.0, "y": None}
    assert to_jsonable(Spec("a")) == {"name": "a", "label": None}
    assert to_jsonable(HasToDict()) == {"k": [1, 2]}


def test_unknown_objects_become_strings_or_are_refused_when_strict():
    class Odd:
        def __str__(self):
            return "odd"

    assert to_jsonable({"x": Odd()}) == {"x": "odd"}
    with pytest.raises(TypeError, match="Odd"):
        to_jsonable({"x": [Odd()]}, strict=True)


def test_output_is_valid_json():
    value = {"t": torch.randn(2, 3), "n": float("nan"), "np": np.linspace(0, 1, 3), "p": Point(x=0, y=1)}
    json.dumps(to_jsonable(value), allow_nan=False)
