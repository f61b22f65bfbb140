"""An uploaded archive of a Hugging Face `save_pretrained` folder, made into one checkpoint. Runs in a
sandbox process (server/services/isolated.py), never in the API process.

    unpack (archives.extract: every member checked first, sizes counted while writing)
    -> config.json checked (models/importers/hf.read_config: no auto_map, a supported model_type)
    -> the model built on the meta device and its parameters counted: no weight is materialised
       until the import is known to fit this server's worker memory (`hidden_size: 1000000` is
       refused in milliseconds)
    -> imported as `mnemoscope import hf` does (safetensors only, loaded strictly) and written as
       one self-describing .safetensors file, which is validated like any uploaded checkpoint.

The API process stores that file under its own hash; the archive's bytes and the unpacked folder
never leave the upload's temporary folders, which the API process removes whatever happens here.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import Invalid, OverBudget
from ..limits import MiB
from .archives import ArchiveLimits, archive_stem, extract, model_folder
from .checkpoints import validate

# Peak memory of an import per parameter: float32 weights (4 bytes) held up to about four times at
# once (the weights read, the model, the state dict cloned for saving, the file's bytes).
IMPORT_BYTES_PER_PARAMETER = 16
# config keys that set a model's size, named in a refusal when the config has them
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_experts",
             "num_local_experts", "n_routed_experts", "state_size", "mamba_d_state")


def meta_parameters(config: dict) -> int:
    """The parameter count of the model `config` describes, built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mnemoscope.models.hf import ATTENTION, transformers_config

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(transformers_config(config), trust_remote_code=False,
                                                     attn_implementation=ATTENTION, dtype=torch.float32)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers' config validators raise various types
        raise ValueError(f"config.json does not describe a model transformers can build: "
                         f"{type(exc).__name__}: {exc}"[:2000]) from exc
    return sum(p.numel() for p in model.parameters())


def check_fits(config: dict, memory_mb: int, display: str) -> int:
    """The model's parameter count, or a 422 (with `budget`) when importing it would not fit one worker."""
    parameters = meta_parameters(config)
    need_mb = math.ceil(parameters * IMPORT_BYTES_PER_PARAMETER / MiB)
    if need_mb > memory_mb:
        sizes = ", ".join(f"{k} {config[k]}" for k in SIZE_KEYS if k in config)
        raise OverBudget(
            f"{display}: config.json describes a {config.get('model_type')} model of {parameters:,} parameters "
            f"({sizes}); importing it takes about {need_mb} MB, more than this server gives one worker "
            f"(worker_memory_mb = {memory_mb}). No weight was loaded. Import it with `mnemoscope import hf` where "
            "it fits, or raise MNEMOSCOPE_WORKER_MEMORY_MB on the server",
            {"limit": "worker_memory_mb", "value": need_mb, "maximum": memory_mb, "lower": ["config.json"],
             "parameters": parameters},
        )
    return parameters


def convert_archive(archive: str, fmt: str, work_dir: str, out: str, display: str, sha256: str, limits: dict,
                    memory_mb: int) -> dict:
    """Unpack `archive` into `work_dir`, import the model folder in it and write the checkpoint to `out`;
    returns what `validate` says of that file. Every refusal is a ServiceError naming `display`."""
    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.importers.hf import import_hf, read_config

    unpacked = Path(work_dir) / "unpacked"
    unpacked.mkdir()
    extract(Path(archive), fmt, unpacked, ArchiveLimits(**limits), display)
    try:
        root = model_folder(unpacked)
    except ValueError as exc:
        raise Invalid(f"{display}: {exc}") from exc
    label = root.name if root != unpacked else archive_stem(display)  # the folder's name, as the CLI names it

    def scrub(message: str) -> str:  # our temporary paths mean nothing to the client
        return message.replace(str(root), label).replace(str(unpacked), display)

    try:
        check_fits(read_config(root), memory_mb, display)
        result = import_hf(root)
    except ValueError as exc:
        raise Invalid(f"{display}: {scrub(str(exc))}") from exc
    extra = {**result.extra, "source": label, "archive": {"name": display, "format": fmt, "sha256": sha256}}
    save_checkpoint(Path(out), result.model, task=result.task, name=label, extra=extra)
    del result  # the model's memory is free before the file is loaded again to check it
    return validate(Path(out), f"{label}.safetensors")
