"""Load Mamba-1 weights in HF layout (MambaForCausalLM) into `mnemoscope.models.mamba.Mamba`.

A checkpoint directory holds config.json and model.safetensors, or shards model-*.safetensors
listed in model.safetensors.index.json. Both HF configs (`hidden_size`, `state_size`, ...) and
the original state-spaces/mamba_ssm configs (`d_model`, `n_layer`, `ssm_cfg`) are read.
Pickled weights (pytorch_model.bin) are refused: convert them to safetensors first.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from ..mamba import Mamba, MambaModelConfig


def _model_config(hf_config: dict, sd: Mapping[str, Tensor]) -> MambaModelConfig:
    """Our config from a HF or mamba_ssm config dict; sizes the config may pad are read off the weights."""
    model_type = hf_config.get("model_type", "mamba")
    if model_type != "mamba":
        raise ValueError(f"not a Mamba-1 checkpoint: model_type={model_type!r} (only 'mamba' is supported)")
    if "hidden_size" in hf_config:
        act = hf_config.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act={act!r} is not supported; Mamba here uses silu")
        d_model = int(hf_config["hidden_size"])
        rank = hf_config.get("time_step_rank", "auto")
        cfg = dict(
            d_model=d_model,
            n_layer=int(hf_config["num_hidden_layers"]),
            d_state=int(hf_config.get("state_size", 16)),
            d_conv=int(hf_config.get("conv_kernel", 4)),
            expand=int(hf_config.get("expand", 2)),
            dt_rank=None if rank == "auto" else int(rank),
            conv_bias=bool(hf_config.get("use_conv_bias", True)),
            bias=bool(hf_config.get("use_bias", False)),
            tie_embeddings=bool(hf_config.get("tie_word_embeddings", True)),
            norm_eps=float(hf_config.get("layer_norm_epsilon", 1e-5)),
        )
    elif "d_model" in hf_config:
        ssm = dict(hf_config.get("ssm_cfg") or {})
        if ssm.get("layer", "Mamba1") != "Mamba1":
            raise ValueError(f"ssm_cfg.layer={ssm['layer']!r}: only Mamba1 is supported")
        if not hf_config.get("rms_norm", True):
            raise ValueError("rms_norm=false (LayerNorm blocks) is not supported")
        rank = ssm.get("dt_rank", "auto")
        cfg = dict(
            d_model=int(hf_config["d_model"]),
            n_layer=int(hf_config["n_layer"]),
            d_state=int(ssm.get("d_state", 16)),
            d_conv=int(ssm.get("d_conv", 4)),
            expand=int(ssm.get("expand", 2)),
            dt_rank=None if rank == "auto" else int(rank),
            conv_bias=bool(ssm.get("conv_bias", True)),
            bias=bool(ssm.get("bias", False)),
            tie_embeddings=bool(hf_config.get("tie_embeddings", True)),
            norm_eps=float(hf_config.get("norm_epsilon", 1e-5)),
        )
    else:
        raise ValueError("config has neither 'hidden_size' (HF MambaConfig) nor 'd_model' (mamba_ssm); "
                         f"keys: {sorted(hf_config)}")
    emb = sd.get("embeddings.weight")
    if emb is None:
        raise ValueError("checkpoint has no embedding table (backbone.embeddings.weight)")
    # The table is padded past config.vocab_size in mamba_ssm checkpoints; the weights decide.
    vocab = int(emb.shape[0])
    head = sd.get("lm_head.weight")
    output = vocab if cfg["tie_embeddings"] or head is None else int(head.shape[0])
    return MambaModelConfig(vocab_size=vocab, output_size=output, **cfg)


def _rename(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in sd.items():
        k = key.removeprefix("backbone.")
        if k.startswith("embedding."):  # mamba_ssm's name; HF renames it the same way on load
            k = "embeddings." + k.removeprefix("embedding.")
        out[k] = value
    return out


def convert_hf_state_dict(sd: Mapping[str, Tensor], hf_config: dict) -> Mamba:
    """A `Mamba` (float32, eval mode) holding the weights of a MambaForCausalLM state dict."""
    weights = _rename(sd)
    config = _model_config(hf_config, weights)
    if config.tie_embeddings:
        weights.pop("lm_head.weight", None)  # HF ties it to the embedding on load, whatever the file holds
    elif "lm_head.weight" not in weights:
        raise ValueError("tie_word_embeddings is false but the checkpoint has no lm_head.weight")
    model = Mamba(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match a Mamba with {config}: missing {missing[:8]}"
                         f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{'...' if len(unexpected) > 8 else ''}")
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
           for k, v in weights.items() if v.shape != expected[k].shape]
    if bad:
        raise ValueError("shape mismatch: " + "; ".join(bad[:8]))
    model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=True)
    return model.eval()


def _weight_files(root: Path) -> list[Path]:
    index = root / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [root / name for name in dict.fromkeys(weight_map.values())]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"shards named in {index} are missing: {missing}")
        return files
    single = root / "model.safetensors"
    if single.exists():
        return [single]
    shards = sorted(root.glob("model-*.safetensors"))
    if shards:
        return shards
    if any(root.glob("*.bin")) or any(root.glob("*.pt")) or any(root.glob("*.pth")):
        raise ValueError(f"{root} holds only pickled weights; they are never loaded (untrusted code). "
                         "Convert them to model.safetensors first.")
    raise FileNotFoundError(f"no model.safetensors (or model-*.safetensors shards) in {root}")


def import_mamba_dir(path: str | Path) -> tuple[Mamba, dict]:
    """Model and metadata from a checkpoint directory of HF layout (never unpickles anything)."""
    from safetensors.torch import load_file

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"not a checkpoint directory: {root}")
    config_file = root / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"no config.json in {root}")
    hf_config = json.loads(config_file.read_text())
    files = _weight_files(root)
    sd: dict[str, Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()})
    model = convert_hf_state_dict(sd, hf_config)
    meta = {
        "source": str(root),
        "format": "hf" if "hidden_size" in hf_config else "mamba_ssm",
        "files": [f.name for f in files],
        "checkpoint_dtypes": dtypes,
        "hf_config": hf_config,
        "config": model.config_dict(),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    return model, meta
