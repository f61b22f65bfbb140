"""Which task a request runs: the checkpoint's own, with the request's overrides."""
from __future__ import annotations

import dataclasses
from typing import Any

from mnemoscope.models.tasks import Task, make_task

from ..errors import Invalid
from ..store import Store
from . import probes as probe_service

# Token ids and the vocabulary size are bounded by the model (`check_fits`: the task's
# vocabulary must be the model's), not by the cap on lengths: a language model's are large.
VOCABULARY_PARAMS = ("vocab_size", "id_low", "id_high", "filler")


def task_spec(record: dict, name: str | None, params: dict[str, Any] | None) -> dict:
    """The full spec to build: the checkpoint's task, its params overridden by the request's;
    naming a different task starts from that task's defaults."""
    own = record.get("task") or {}
    params = dict(params or {})
    if name is None or name == own.get("name"):
        name = own.get("name")
        params = {**(own.get("params") or {}), **params}
    if not name:
        raise Invalid('this checkpoint records no task; name one in the request body, e.g. {"task": {"name": "copy"}}')
    return {"name": name, "params": params}


def resolve_task(record: dict, name: str | None, params: dict[str, Any] | None, *, max_int: int,
                 store: Store | None = None) -> Task:
    """Build the task for a request, with 422s that say what to change. Types and ranges
    are the task's own (`mnemoscope.models.tasks.params`); this server adds its cap on
    integer parameters. With the `store`, a prompt_pairs task may name a stored probe
    (`{"probe": "<id>"}`), whose pairs become its params."""
    spec = task_spec(record, name, params)
    if spec["name"] == probe_service.TASK:
        spec["params"] = probe_service.task_params(store, model_sizes(record).get("vocab_size"), spec["params"])
    _check_server_cap(spec, max_int)
    try:
        task = make_task(spec)
    except Exception as exc:  # noqa: BLE001 - unknown task or parameter, wrong type, out of range
        raise Invalid(f"task {spec['name']!r}: {exc}") from exc
    check_fits(record, task)
    return task


def _check_server_cap(spec: dict, max_int: int) -> None:
    for key, value in spec["params"].items():
        if key in VOCABULARY_PARAMS:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > max_int:
            raise Invalid(f"task parameter {key!r}={value} is larger than this server allows ({max_int})")


def model_sizes(record: dict) -> dict[str, Any]:
    """The checkpoint's config, where its sizes are read: a Hugging Face model's live in its
    config.json (`hf_config`), and its outputs are its vocabulary."""
    config = record.get("config") or {}
    hf_config = config.get("hf_config")
    if isinstance(hf_config, dict) and hf_config.get("vocab_size") is not None:
        return {**config, "vocab_size": hf_config["vocab_size"], "output_size": hf_config["vocab_size"]}
    return config


def check_fits(record: dict, task: Task) -> None:
    """The task's inputs and outputs must have the sizes the model was built for."""
    config = model_sizes(record)
    # a model with an embedding takes token ids; its input_size (if any) is unused
    keys = ("vocab_size", "output_size") if config.get("vocab_size") is not None else ("input_size", "output_size")
    for key in keys:
        want = config.get(key)
        got = getattr(task, key, None)
        if want is None or got is None:
            continue
        if int(want) != int(got):
            raise Invalid(
                f"task {task.name!r} with params {dataclasses.asdict(task.params)} has {key} {got}, "
                f"but this {record.get('arch')} model was built for {key} {want}"
            )
