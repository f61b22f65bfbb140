"""Synthetic tasks: pure, seeded generators with their loss, metric and patching pairs."""
from __future__ import annotations

from .base import Batch, PatchPair, Task
from .params import ParamSpec, TaskParams, param_specs

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    cls.Params.task_name = cls.name  # parameter errors name their task
    return cls


def _load_all() -> None:
    from . import copy, induction, prompt_pairs, recall  # noqa: F401  (registers copy, repeat_copy, associative_recall, mqar, induction, prompt_pairs)


def make_task(spec: dict | str, **overrides) -> Task:
    """Build a task from `{"name": ..., "params": {...}}` or a bare name, with overrides."""
    _load_all()
    if isinstance(spec, str):
        spec = {"name": spec, "params": {}}
    name = spec.get("name")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    cls = TASKS[name]
    params = {**spec.get("params", {}), **overrides}
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls.Params)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"task {name!r} has no parameters {unknown}; it has {sorted(fields)}")
    return cls(cls.Params(**params))


__all__ = ["Batch", "ParamSpec", "PatchPair", "Task", "TaskParams", "TASKS", "make_task", "param_specs", "register_task"]
