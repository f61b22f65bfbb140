"""An uploaded archive of a Hugging Face `save_pretrained` folder, made into one checkpoint. Runs in a
sandbox process (server/services/isolated.py), never in the API process.

    unpack (archives.extract: every member checked first, sizes counted while writing)
    -> config.json checked (models/importers/hf.read_config: no auto_map, a supported model_type)
    -> its layers counted (upload_max_layers) and the model built on the meta device and its
       parameters counted: no weight is materialised
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


# config attributes that count decoder layers (transformers maps each model's own name onto these)
LAYER_KEYS = ("num_hidden_layers", "num_blocks")


def _buildable(build):
    """What `build()` returns; transformers' refusals of a config as a ValueError naming them."""
    try:
        return build()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers' config validators raise various types
        raise ValueError(f"config.json does not describe a model transformers can build: "
                         f"{type(exc).__name__}: {exc}"[:2000]) from exc


def meta_parameters(hf_config) -> int:
    """The parameter count of the model a transformers config describes, built on the meta device
    (no memory; the time grows with the layers, for some models with their square)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mnemoscope.models.hf import ATTENTION

    def build():
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False, attn_implementation=ATTENTION,
                                                    dtype=torch.float32)

    return sum(p.numel() for p in _buildable(build).parameters())


def check_layers(hf_config, max_layers: int, display: str) -> None:
    """A 422 (with `budget`) when the config declares more layers than an upload may build: building
    even on the meta device takes seconds per hundred layers (Jamba's config lists grow with the square)."""
    for key in LAYER_KEYS:
        layers = getattr(hf_config, key, None)
        if isinstance(layers, int) and layers > max_layers:
            raise OverBudget(
                f"{display}: config.json declares {key} {layers}, more layers than this server builds for an upload "
                f"(upload_max_layers = {max_layers}). Nothing was built. Raise MNEMOSCOPE_UPLOAD_MAX_LAYERS on the "
                "server, or import it with `mnemoscope import hf`",
                {"limit": "upload_max_layers", "value": layers, "maximum": max_layers, "lower": ["config.json"]},
            )


def check_fits(config: dict, memory_mb: int, max_layers: int, display: str) -> int:
    """The model's parameter count, or a 422 (with `budget`) when importing it would not fit one worker."""
    from mnemoscope.models.hf import transformers_config

    hf_config = _buildable(lambda: transformers_config(config))
    check_layers(hf_config, max_layers, display)
    parameters = meta_parameters(hf_config)
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
                    memory_mb: int, max_layers: int) -> dict:
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
        check_fits(read_config(root), memory_mb, max_layers, display)
        result = import_hf(root)
    except ValueError as exc:
        raise Invalid(f"{display}: {scrub(str(exc))}") from exc
    extra = {**result.extra, "source": label, "archive": {"name": display, "format": fmt, "sha256": sha256}}
    save_checkpoint(Path(out), result.model, task=result.task, name=label, extra=extra)
    del result  # the model's memory is free before the file is loaded again to check it
    return validate(Path(out), f"{label}.safetensors")
