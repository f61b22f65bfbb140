"""Sweep files: a base recipe, the knobs to turn and their values, seeds, and the analyses to
run on every trained model -- as data, validated by a pydantic model.

    spec = load_sweep("sweeps/ntm-controller-bypass.toml")
    for point in spec.points():          # the grid: every knob combination x every seed
        point.recipe, point.seed, point.key, point.train_key

A sweep file (TOML):

    name = "ntm-controller-bypass"            # the output folder's name: letters, digits, - and _
    description = "does reliance fall as the controller grows?"
    seeds = [0, 1, 2]

    [base]                                    # a recipe of models/zoo.py, as data
    recipe = "ntm-copy-big-controller"        # optional: start from a zoo recipe, then override
    arch = "ntm"
    config = { memory_slots = 16, memory_width = 8 }
    task = { name = "copy", params = { bits = 8, min_length = 1, max_length = 3 } }
    train = { steps = 3000, batch_size = 16, lr = 3e-3 }
    remedies = {}

    [knobs]                                   # path -> values; the grid is their product
    "remedies.controller_size" = [16, 64, 256]
    "remedies.bypass_dropout" = [0.0, 0.5, 0.9]

    [analysis]
    run = ["reliance"]                        # "report": also the full report, kept as JSON
    samples = 32
    seed = 0

    [resources]                               # per point, for the ray executor
    num_cpus = 1
    num_gpus = 0

    [plot]
    x = "remedies.controller_size"            # default: the first knob; the others make the lines

A knob path names where its value goes: `arch`, `config.<field>`, `task.params.<param>`,
`train.<TrainConfig option>`, `remedies.<remedy>`, or `eval.<task param>` (a task parameter
changed for the analysis only: the same trained model evaluated on, say, longer sequences).
The knob `recipe` lists zoo recipes by name: each value starts its points from that recipe
(the base's own fields still override it), so a list of recipes that are no grid -- the zoo
itself, sweeps/zoo.toml -- is a sweep too.

Keys: a point's `train_key` hashes its full recipe (arch, config, task, train options,
remedies), its seed and mnemoscope's version; its `key` adds the evaluation overrides and the
analysis options. The runner (cli/sweep.py) skips a point whose key is already done and
trains a recipe once for all points that share its train_key.

This module stays data, like models/zoo.py: it names models and options and trains nothing.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .zoo import Recipe, check_recipe, get_recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# knob path prefix -> where in the point its value goes ("arch" is a whole path)
KNOB_PLACES = ("recipe", "arch", "config.", "task.params.", "train.", "remedies.", "eval.")
ANALYSES = ("reliance", "report")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$"


class SweepError(ValueError):
    """A sweep file that cannot be run; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Base(_Strict):
    """The recipe every point starts from: a zoo recipe by name and/or explicit fields (the
    fields given replace the zoo recipe's)."""

    recipe: str | None = Field(None, description="a zoo recipe or study (models/zoo.py) to start from")
    arch: str | None = None
    config: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    remedies: dict[str, Any] | None = None

    def resolved(self, recipe: str | None = None) -> dict:
        """{arch, config, task, train, remedies}: the zoo recipe's (`recipe`, a `recipe` knob's
        value, else the base's own), overridden by the fields given."""
        start = {"arch": None, "config": {}, "task": None, "train": None, "remedies": {}}
        recipe = recipe or self.recipe
        if recipe is not None:
            r = get_recipe(recipe)
            start = {"arch": r.arch, "config": r.config, "task": r.task, "train": r.train, "remedies": r.remedies}
        given = self.model_dump(exclude={"recipe"}, exclude_none=True)
        out = json.loads(json.dumps({**start, **given}))  # a deep copy: knobs write into it
        missing = [k for k in ("arch", "task", "train") if not out.get(k)]
        if missing:
            raise ValueError(f"base needs {missing} (or a zoo `recipe` that has them)")
        return out


class Analysis(_Strict):
    run: list[str] = Field(default_factory=lambda: ["reliance"],
                           description="reliance: the verdict's numbers; report: also the full report as JSON")
    samples: int = Field(32, ge=2, le=4096)
    seed: int = Field(0, ge=0)

    @field_validator("run")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ANALYSES))
        if unknown or not value:
            raise ValueError(f"unknown analyses {unknown}; choose from {list(ANALYSES)}" if unknown
                             else f"name at least one analysis of {list(ANALYSES)}")
        return list(dict.fromkeys(value))


class Resources(_Strict):
    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)


class Plot(_Strict):
    x: str | None = Field(None, description="the knob along the x axis; default the first")


class SweepSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    base: Base
    knobs: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    analysis: Analysis = Field(default_factory=Analysis)
    resources: Resources = Field(default_factory=Resources)
    plot: Plot = Field(default_factory=Plot)

    @field_validator("knobs")
    @classmethod
    def _knob_paths(cls, knobs: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in knobs.items():
            if not any(path == p if not p.endswith(".") else path.startswith(p) and len(path) > len(p)
                       for p in KNOB_PLACES):
                raise ValueError(f"knob {path!r}: a path starts with one of {list(KNOB_PLACES)}")
            if not values:
                raise ValueError(f"knob {path!r} has no values")
            if len({_canonical(v) for v in values}) != len(values):
                raise ValueError(f"knob {path!r} repeats a value: {values}")
        return knobs

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct and non-negative, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _plot_x_is_a_knob(self) -> "SweepSpec":
        if self.plot.x is not None and self.plot.x not in self.knobs:
            raise ValueError(f"plot.x {self.plot.x!r} is not one of the knobs {list(self.knobs)}")
        return self

    # -- derived --------------------------------------------------------------------------
    @property
    def x_knob(self) -> str | None:
        return self.plot.x or next(iter(self.knobs), None)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of knob values, in file order (the last knob turns fastest)."""
        paths = list(self.knobs)
        return [dict(zip(paths, values)) for values in itertools.product(*self.knobs.values())]

    def points(self) -> list["Point"]:
        if "recipe" in self.knobs:
            return [make_point(self, self.base.resolved(knobs["recipe"]), knobs, seed)
                    for knobs in self.grid() for seed in self.seeds]
        base = self.base.resolved()
        return [make_point(self, base, knobs, seed) for knobs in self.grid() for seed in self.seeds]

    def check(self) -> list["Point"]:
        """The points, each recipe checked as the zoo checks its own (the model builds, the
        options are TrainConfig's); a SweepError names the first point that fails."""
        try:
            points = self.points()
        except ValueError as exc:
            raise SweepError(str(exc)) from exc
        checked: set[str] = set()
        for point in points:
            if point.train_key in checked:
                continue
            try:
                check_recipe(point.zoo_recipe(self.description))
                _check_eval(point)
            except (ValueError, TypeError) as exc:
                raise SweepError(f"point {point.describe()}: {exc}") from exc
            checked.add(point.train_key)
        return points


@dataclass(frozen=True)
class Point:
    """One trained-and-analysed model of a sweep."""

    sweep: str
    knobs: dict[str, Any]  # path -> value
    seed: int
    recipe: dict  # {arch, config, task, train, remedies}
    eval: dict  # task parameters changed for the analysis only
    analysis: dict  # {run, samples, seed}
    train_key: str
    key: str

    def zoo_recipe(self, shows: str = "") -> Recipe:
        r = self.recipe
        return Recipe(name=f"{self.sweep}-{self.train_key}", arch=r["arch"], config=r["config"], task=r["task"],
                      train=r["train"], remedies=r["remedies"], seed=self.seed, shows=shows or self.sweep)

    def describe(self) -> str:
        knobs = ", ".join(f"{k}={_canonical(v)}" for k, v in self.knobs.items())
        return f"{knobs + ', ' if knobs else ''}seed={self.seed}"


def make_point(spec: SweepSpec, base: dict, knobs: dict[str, Any], seed: int) -> Point:
    from mnemoscope import __version__

    recipe = json.loads(json.dumps(base))
    evaluation: dict[str, Any] = {}
    for path, value in knobs.items():
        if path == "recipe":
            continue  # the base it resolved from
        if path == "arch":
            recipe["arch"] = value
        elif path.startswith("eval."):
            evaluation[path[len("eval."):]] = value
        elif path.startswith("task.params."):
            recipe["task"].setdefault("params", {})[path[len("task.params."):]] = value
        else:
            place, _, field = path.partition(".")
            recipe[place][field] = value
    train_key = digest({"recipe": recipe, "seed": seed, "version": __version__})
    analysis = spec.analysis.model_dump()
    key = digest({"train_key": train_key, "eval": evaluation, "analysis": analysis})
    return Point(sweep=spec.name, knobs=dict(knobs), seed=seed, recipe=recipe, eval=evaluation,
                 analysis=analysis, train_key=train_key, key=key)


def _check_eval(point: Point) -> None:
    if not point.eval:
        return
    from .tasks import make_task

    make_task(make_task(point.recipe["task"]).spec(), **point.eval)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(obj: Any) -> str:
    """16 hex digits of the sha256 of obj's canonical JSON: equal data, equal key."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:16]


def parse_sweep(text: str, source: str = "<sweep>") -> SweepSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise SweepError(f"{source}: {problems}") from None


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SweepError(f"{path}: cannot read the sweep file ({exc.strerror or exc})") from exc
    return parse_sweep(text, str(path))


__all__ = ["SweepSpec", "SweepError", "Point", "KNOB_PLACES", "ANALYSES", "load_sweep", "parse_sweep", "digest"]
