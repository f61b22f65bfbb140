"""Import a Hugging Face `save_pretrained` directory into one self-describing mnemoscope checkpoint.

    mnemoscope import hf DIR -o OUT.safetensors [--task mqar --task-param vocab_size=64 ...] [--wrap]

The directory must hold config.json with a model_type from `SUPPORTED_MODEL_TYPES` and the weights as
safetensors (model.safetensors, or shards listed in model.safetensors.index.json). Nothing in it runs:
a config with `auto_map` (remote code) is refused before transformers sees it, pickled weights
(pytorch_model.bin, *.pt) are refused with the command that converts them, and the model is built by
transformers from the config alone, then the weights are loaded strictly (every tensor the model has,
no other, each of its shape).

Which architecture a directory becomes:
- model_type "mamba" (Mamba-1): the native `mamba` (models/mamba.py), weight-compatible with
  MambaForCausalLM and with richer sites (ssm.read, the D skip, the gate, the state, implicit
  attention); `wrap_mamba=True` (`--wrap`) keeps the transformers module instead (arch "hf").
- every other supported model_type: arch "hf" (models/hf.py), the transformers module with sites per layer.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from ..hf import ATTENTION, SUPPORTED_MODEL_TYPES, HFConfig, HFModel, read_checked_config, transformers_config
from ..sites import SiteModel

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX = "model.safetensors.index.json"


def _convert_command(root: Path) -> str:
    return (f'python -c "from transformers import AutoModelForCausalLM; '
            f"AutoModelForCausalLM.from_pretrained('{root}').save_pretrained('{root}', safe_serialization=True)\"")


def read_config(root: Path) -> dict:
    """config.json of a model directory, checked (supported model_type, no remote code)."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory (expected a Hugging Face save_pretrained folder)")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{root}: no config.json (expected a Hugging Face save_pretrained folder)")
    config = read_checked_config(config_file)
    if "vocab_size" not in config:  # save_pretrained may leave out a default; the sites and tasks need it
        config["vocab_size"] = int(transformers_config(config).vocab_size)
    return config


def weight_files(root: Path) -> list[Path]:
    """The safetensors files holding the weights; pickled weights are refused, never opened."""
    index = root / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = list(dict.fromkeys(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{index}: not a safetensors index with a weight_map ({exc})") from exc
        # shard names are plain file names in this folder: "../x" or "/etc/x" would read elsewhere
        bad = [n for n in names if not isinstance(n, str) or Path(n).name != n or not n.endswith(".safetensors")]
        if bad:
            raise ValueError(f"{index}: shard names must be .safetensors files in the same folder; got {bad[:4]}")
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise ValueError(f"{index} names shards that are missing: {missing[:8]}")
        return [root / n for n in names]
    single = root / "model.safetensors"
    if single.is_file():
        return [single]
    pickled = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ValueError(
            f"{root} holds pickled weights only ({', '.join(pickled[:4])}): mnemoscope never unpickles a model "
            "(unpickling runs code). Convert them to safetensors where you trust the file, e.g.\n"
            f"    {_convert_command(root)}"
        )
    raise ValueError(f"{root}: no model.safetensors and no {INDEX}")


def read_weights(files: list[Path]) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, Tensor] = {}
    for f in files:
        try:
            part = load_file(str(f), device="cpu")
        except Exception as exc:  # noqa: BLE001 - the library's errors vary by version
            raise ValueError(f"{f.name}: safetensors could not read it: {exc}") from exc
        clash = sorted(set(part) & set(tensors))
        if clash:
            raise ValueError(f"{f.name}: tensors also in another shard: {clash[:4]}")
        tensors.update(part)
    return tensors


def load_pretrained(root: Path, hf_config: dict) -> torch.nn.Module:
    """The transformers model of a checked directory, weights loaded strictly (float32).

    transformers itself reads the files: `save_pretrained` writes some models in a layout other than
    the one in memory (experts one by one, `backbone.` prefixes) and `from_pretrained` converts them
    back. The config object is ours (checked, no `auto_map`), `trust_remote_code` is off and only
    safetensors are read; every missing, unexpected or misshapen tensor is an error, not a warning.
    """
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            root, config=transformers_config(hf_config), trust_remote_code=False, use_safetensors=True,
            attn_implementation=ATTENTION, dtype=torch.float32, output_loading_info=True)
    except (OSError, RuntimeError, ValueError) as exc:  # shape mismatches, unreadable files
        raise ValueError(f"transformers could not load the weights: {exc}") from exc
    problems = [f"{what.replace('_', ' ')} {_few(sorted(map(str, info[what])))}"
                for what in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") if info.get(what)]
    if problems:
        raise ValueError(f"the weights do not match a {type(model).__name__} built from config.json: "
                         + "; ".join(problems))
    return model


def _few(keys: list[str], n: int = 8) -> str:
    return "[" + ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "") + "]"


def task_spec(task: Mapping | str | None, vocab_size: int) -> dict:
    """The task's full spec, after checking that a language model of this vocabulary can run it."""
    if task is None:
        return {}
    from ..tasks import make_task

    t = make_task(dict(task) if isinstance(task, Mapping) else task)
    if t.vocab_size is None:
        raise ValueError(f"task {t.name!r} takes continuous inputs; a language model takes token ids "
                         "(use a token task such as mqar)")
    if t.vocab_size > vocab_size or t.output_size != vocab_size:
        raise ValueError(f"task {t.name!r} needs vocabulary {t.vocab_size} and {t.output_size} outputs; "
                         f"the model has vocab_size {vocab_size}")
    return t.spec()


def stored_dtypes(files: list[Path]) -> list[str]:
    """The dtypes the weights are stored in (read from the headers; the model itself is float32)."""
    from safetensors import safe_open

    dtypes = set()
    for f in files:
        with safe_open(str(f), "pt") as handle:
            dtypes.update(handle.get_slice(k).get_dtype() for k in handle.keys())
    return sorted(dtypes)


def _transformers_version() -> str:
    # the checkpoint holds transformers' in-memory layout of this version (see README)
    import transformers

    return transformers.__version__


@dataclass
class HFImport:
    model: SiteModel  # eval mode, float32
    task: dict  # the task spec ({} when none was given)
    extra: dict  # where it came from, for the checkpoint's `extra`


def import_hf(path: str | os.PathLike, task: Mapping | str | None = None, *, wrap_mamba: bool = False) -> HFImport:
    root = Path(path)
    config = read_config(root)
    spec = task_spec(task, int(config["vocab_size"]))  # before the weights: a wrong task fails fast
    files = weight_files(root)
    model_type = config["model_type"]
    if model_type == "mamba" and not wrap_mamba:
        from .mamba_hf import convert_hf_state_dict

        model: SiteModel = convert_hf_state_dict(read_weights(files), config)
    else:
        model = HFModel(HFConfig(config), hf_model=load_pretrained(root, config))
    extra = {
        "imported_from": "hf",
        "source": root.name,
        "model_type": model_type,
        "files": [f.name for f in files],
        "checkpoint_dtypes": stored_dtypes(files),
        "transformers_version": _transformers_version(),
    }
    if model.arch != "hf":
        extra["hf_config"] = config  # the native model's config is its own; keep the original too
    return HFImport(model.eval(), spec, extra)


def import_hf_dir(path: str | os.PathLike, task: Mapping | str | None = None, *, wrap_mamba: bool = False) -> SiteModel:
    """The model of a Hugging Face save_pretrained directory, in eval mode (see the module doc)."""
    return import_hf(path, task, wrap_mamba=wrap_mamba).model


def import_hf_checkpoint(path: str | os.PathLike, out: str | os.PathLike, task: Mapping | str | None = None, *,
                         wrap_mamba: bool = False, name: str | None = None) -> tuple[Path, HFImport]:
    """Import `path` and write it to `out` (a .safetensors checkpoint): arch, config (the HF config for
    arch "hf"), task and the weights."""
    from ..checkpoints import save_checkpoint

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"output {out} must end in .safetensors")
    result = import_hf(path, task, wrap_mamba=wrap_mamba)
    written = save_checkpoint(out, result.model, task=result.task, name=name or Path(path).resolve().name,
                              extra=result.extra)
    return written, result


def describe(result: HFImport) -> str:
    """One line for the command line."""
    model = result.model
    params = sum(p.numel() for p in model.parameters())
    memory = sorted({n.split(".", 2)[2] for n, s in model.site_specs().items() if s.memory and n.startswith("layers.")})
    task = result.task.get("name", "no task")
    return (f"{result.extra['model_type']} as arch {model.arch!r}: {params:,} parameters, "
            f"memory sites {', '.join(memory) or 'none'}, task {task}")


__all__ = ["SUPPORTED_MODEL_TYPES", "HFImport", "import_hf", "import_hf_dir", "import_hf_checkpoint", "describe"]
