"""Hugging Face causal language models of memory and hybrid architectures, behind the site contract.

`HFModel` holds a model that transformers builds from its own config (`AutoModelForCausalLM.from_config`,
never `trust_remote_code`, nothing downloaded) and names each decoder layer's parts by what they are:

    layers.{i}.residual                  the hidden state entering layer i (the residual stream)
    layers.{i}.<kind>.out                what each mixer / MLP of layer i hands the residual stream
    layers.{i}.attention.pattern         softmax weights of an attention layer, [heads, key]

with <kind> one of MODULE_KINDS' values: `ssm`, `linear_attention`, `recurrent` (recurrent-state
mixers: `SiteSpec.memory` true), `attention`, `conv`, `mlp`, `moe` (the competitors of memory:
memory false). Which module of a layer is which kind is read off its class (MODULE_KINDS), so a
transformers release that renames or adds a module makes the model refuse to build instead of
silently losing a site.

The sites are PyTorch forward hooks on those modules, attached only while a site bus is active (inside
`hooks(...)`) and removed when the forward pass ends, even when it raises. Every value is `[batch, time,
...]` with time on axis 1, so recording and per-timestep interventions work as for every other model.
Attention runs through one eager attention function registered with transformers (ATTENTION), equal to
transformers' own eager attention, which hands its softmax weights to the site when one is attached.

A Mamba-1 directory can also become the native `mamba` architecture (models/mamba.py, richer sites:
ssm.read, ssm.skip, ssm.state, implicit attention); `models/importers/hf.py` decides which.
"""
from __future__ import annotations

import math
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .sites import SiteModel, SiteSpec, output_spec

# model_type -> where its decoder layers live. The keys are the supported model types.
LAYER_LISTS: dict[str, str] = {
    "mamba": "backbone.layers",
    "mamba2": "backbone.layers",
    "falcon_mamba": "backbone.layers",
    "jamba": "model.layers",
    "bamba": "model.layers",
    "nemotron_h": "model.layers",
    "granitemoehybrid": "model.layers",
    "falcon_h1": "model.layers",
    "qwen3_next": "model.layers",
    "recurrent_gemma": "model.layers",
    "minimax": "model.layers",
    "lfm2": "model.layers",
    "rwkv": "rwkv.blocks",
    "xlstm": "backbone.blocks",
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(LAYER_LISTS)

# Config values set whatever the file says. use_cache: the sites see whole sequences, never a cache.
# rescale_every: RWKV halves its weights in place in eval mode (an fp16 overflow guard), which would
# change the stored weights and the residual stream's scale; in float32 0 computes the same logits.
BUILD_OVERRIDES: dict[str, dict[str, Any]] = {"rwkv": {"rescale_every": 0}}

# Module class (inside a decoder layer) -> what it is. Norms and dropout carry no site.
MODULE_KINDS: dict[str, str] = {
    # selective state-space mixers (Mamba-1, Mamba-2 and their hybrids)
    "MambaMixer": "ssm", "Mamba2Mixer": "ssm", "FalconMambaMixer": "ssm", "JambaMambaMixer": "ssm",
    "BambaMixer": "ssm", "NemotronHMamba2Mixer": "ssm", "GraniteMoeHybridMambaLayer": "ssm", "FalconH1Mixer": "ssm",
    # key-value matrix memories read by queries: Gated DeltaNet, lightning attention, mLSTM
    "Qwen3NextGatedDeltaNet": "linear_attention", "MiniMaxLightningAttention": "linear_attention",
    "xLSTMLayer": "linear_attention",
    # gated recurrences with a vector state: RG-LRU (with its short conv), RWKV's time mixing (WKV)
    "RecurrentGemmaRecurrentBlock": "recurrent", "RwkvSelfAttention": "recurrent",
    # softmax attention (RecurrentGemma's is local, a sliding window)
    "JambaAttention": "attention", "BambaAttention": "attention", "NemotronHAttention": "attention",
    "GraniteMoeHybridAttention": "attention", "Qwen3NextAttention": "attention",
    "RecurrentGemmaAttention": "attention", "MiniMaxAttention": "attention", "Lfm2Attention": "attention",
    "FalconH1Attention": "attention",
    # short causal convolution (LFM2's gated conv operator)
    "Lfm2ShortConv": "conv",
    # per-token feed-forward (RWKV's channel mixing also shifts the token by one: not memory either)
    "JambaMLP": "mlp", "BambaMLP": "mlp", "NemotronHMLP": "mlp", "GraniteMoeHybridMLP": "mlp",
    "Qwen3NextMLP": "mlp", "RecurrentGemmaMlp": "mlp", "Lfm2MLP": "mlp", "xLSTMFeedForward": "mlp",
    "FalconH1MLP": "mlp",
    "RwkvFeedForward": "mlp",
    # mixtures of experts
    "JambaSparseMoeBlock": "moe", "NemotronHMoE": "moe", "GraniteMoeHybridMoE": "moe",
    "Qwen3NextSparseMoeBlock": "moe", "MiniMaxSparseMoeBlock": "moe",
}
MEMORY_MIXERS = ("ssm", "linear_attention", "recurrent")
# What each layer part is to the reliance analysis: recurrent-state mixers are the memory;
# attention and short convolutions are paths parallel to it (the bypass); MLPs and experts
# read the residual stream in series. A wrapped SSM mixer's output includes its D skip, so
# its memory component is the whole mixer (the native `mamba` arch separates the two).
PART_ROLES = {**{kind: "memory" for kind in MEMORY_MIXERS}, "attention": "bypass", "conv": "bypass",
              "mlp": "series", "moe": "series"}
ATTENTION = "mnemoscope_eager"  # the attention implementation every wrapped model runs with
_PATTERN_SITE = "_mnemoscope_pattern_site"  # set on an attention module while its pattern site is wanted
HF_CONFIG_DIR = Path(__file__).resolve().parent / "hf_configs"  # tiny configs the zoo trains
_FLOAT_TAG = "__float__"  # JSON has no inf/nan; HF configs do (Mamba-2's time_step_limit)


def _is_sitless(module: nn.Module) -> bool:
    name = type(module).__name__
    return name.endswith(("RMSNorm", "LayerNorm", "Norm")) or isinstance(module, (nn.Dropout, nn.Identity))


def check_hf_config(hf_config: Any) -> str:
    """The model_type of a config this wrapper builds; a ValueError naming the problem otherwise.
    Runs before transformers sees the config, so a refused config runs no code."""
    if not isinstance(hf_config, dict):
        raise ValueError(f"a Hugging Face config must be a JSON object, got {type(hf_config).__name__}")
    if "auto_map" in hf_config:
        raise ValueError(
            f"config asks for remote code (auto_map: {hf_config['auto_map']!r}); mnemoscope never runs code "
            "from a model directory (no trust_remote_code). Use a model_type that transformers ships: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    model_type = hf_config.get("model_type")
    if model_type not in LAYER_LISTS:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    return model_type


def read_checked_config(path: str | os.PathLike) -> dict:
    """A Hugging Face config.json read and checked (a JSON object, a supported model_type, no
    auto_map); a ValueError names the file. Callers add their own rule for a missing vocab_size."""
    import json

    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    try:
        check_hf_config(config)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return config


def read_hf_config_file(path: str | os.PathLike) -> dict:
    """A config.json-style file (a model to train from scratch), checked as the importer checks a
    directory's config: a JSON object, a supported model_type, no auto_map. A ValueError names the file."""
    config = read_checked_config(path)
    if "vocab_size" not in config:
        raise ValueError(f"{path}: no vocab_size; the task's vocabulary must match it, so the file must say it")
    return config


def bundled_hf_config(name: str) -> dict:
    """One of the configs shipped in models/hf_configs/ (the zoo's trained hybrids), by file stem."""
    return read_hf_config_file(HF_CONFIG_DIR / f"{name}.json")


def encode_config(value: Any) -> Any:
    """A config dict safe for strict JSON: non-finite floats become {"__float__": "inf"}."""
    if isinstance(value, dict):
        return {str(k): encode_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_config(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: repr(value)}  # 'inf', '-inf', 'nan'
    return value


def decode_config(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_FLOAT_TAG}:
            return float(value[_FLOAT_TAG])
        return {k: decode_config(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_config(v) for v in value]
    return value


def _register_attention() -> None:
    """Register ATTENTION with transformers once: eager attention whose weights pass through a site."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask

    if ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(ATTENTION, _attention_with_sites)
        AttentionMaskInterface.register(ATTENTION, eager_mask)  # the same additive mask eager attention gets


def _attention_with_sites(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                          scaling: float, dropout: float = 0.0, **kwargs) -> tuple[Tensor, Tensor]:
    """transformers' `eager_attention_forward` (the same in every supported model), plus the site.
    query [B, H, T, d]; key, value [B, H_kv, S, d] repeated to H heads."""
    n_rep = module.num_key_value_groups
    key = key.repeat_interleave(n_rep, dim=1) if n_rep > 1 else key
    value = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # [B, H, T, S]
    site = module.__dict__.get(_PATTERN_SITE)
    if site is not None:
        model, name = site
        weights = model.site_seq(name, weights.transpose(1, 2)).transpose(1, 2)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # [B, T, H, d]
    return out, weights


def transformers_config(hf_config: dict):
    """The transformers config object of a config dict (checked first: no remote code, a supported type)."""
    model_type = check_hf_config(hf_config)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    _register_attention()
    values = {k: v for k, v in decode_config(hf_config).items() if k != "model_type"}
    values.update(use_cache=False, **BUILD_OVERRIDES.get(model_type, {}))
    config = CONFIG_MAPPING[model_type].from_dict(values)
    config._attn_implementation = ATTENTION
    return config


def build_transformers_model(hf_config: dict) -> nn.Module:
    """A randomly initialised float32 transformers model from a config dict."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(transformers_config(hf_config), trust_remote_code=False,
                                            attn_implementation=ATTENTION, dtype=torch.float32)


@dataclass
class HFConfig:
    """The model's Hugging Face config.json as a dict (non-finite floats encoded, see `encode_config`);
    model_type and sizes are read from it."""

    hf_config: dict

    @property
    def model_type(self) -> str:
        return self.hf_config.get("model_type", "")

    @property
    def vocab_size(self) -> int:
        return int(self.hf_config["vocab_size"])

    @property
    def output_size(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class _Part:
    """One module of a decoder layer that carries a site."""

    layer: int
    path: str  # module path inside the wrapper, e.g. "hf.model.layers.3.mamba"
    kind: str  # a MODULE_KINDS value

    @property
    def site(self) -> str:
        return f"layers.{self.layer}.{self.kind}.out"


class HFModel(SiteModel):
    """A transformers causal LM (`self.hf`) with sites per layer; token ids [B, T] -> logits [B, T, vocab]."""

    arch = "hf"
    Config = HFConfig

    def __init__(self, config: HFConfig, hf_model: nn.Module | None = None):
        """`hf_model`: an already loaded transformers model of this config (the importer's, whose weights
        transformers has converted from the saved layout); by default a random one is built."""
        if not isinstance(config.hf_config, dict):
            raise ValueError(f"hf config must be a dict, got {type(config.hf_config).__name__}")
        config.hf_config = encode_config(config.hf_config)
        super().__init__(config)
        self.hf = build_transformers_model(config.hf_config) if hf_model is None else hf_model
        self.hidden_size = int(self.hf.config.hidden_size)
        self._parts = self._find_parts()

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers (a property: registering them twice would duplicate them in state_dict)."""
        return self.hf.get_submodule(LAYER_LISTS[self.config.model_type])

    def _find_parts(self) -> list[_Part]:
        parts = []
        layers_path = "hf." + LAYER_LISTS[self.config.model_type]
        for i, layer in enumerate(self.layers):
            kinds = set()
            for child_name, child in layer.named_children():
                if _is_sitless(child):
                    continue
                kind = MODULE_KINDS.get(type(child).__name__)
                if kind is None:
                    raise ValueError(
                        f"{self.config.model_type} layer {i}: module {child_name!r} ({type(child).__name__}) is not one "
                        "mnemoscope knows; this transformers version may differ from the one the sites were written for"
                    )
                if kind in kinds:
                    raise ValueError(f"{self.config.model_type} layer {i} has two {kind} modules; their sites would clash")
                kinds.add(kind)
                parts.append(_Part(i, f"{layers_path}.{i}.{child_name}", kind))
        return parts

    # -- contract ---------------------------------------------------------------------------
    def site_specs(self) -> dict[str, SiteSpec]:
        d = self.hidden_size
        specs = []
        for i in range(len(self.layers)):
            specs.append(SiteSpec(f"layers.{i}.residual", "bypass", (d,), ("feature",),
                                  doc=f"hidden state entering layer {i} (the residual stream); an intervention "
                                      "replaces the layer's whole input"))
        for part in self._parts:
            memory = part.kind in MEMORY_MIXERS
            module = self.get_submodule(part.path)
            specs.append(SiteSpec(part.site, "read" if memory else "bypass", (d,), ("feature",), memory=memory,
                                  role=PART_ROLES[part.kind],
                                  doc=f"{type(module).__name__} output of layer {part.layer}, added to the residual "
                                      f"stream ({'recurrent-state memory' if memory else 'not memory'})"))
            if part.kind == "attention":
                specs.append(SiteSpec(f"layers.{part.layer}.attention.pattern", "attention", (self._heads(module), None),
                                      ("head", "key"), distribution=True, memory=False,
                                      doc="softmax attention weights over keys (not memory)"))
        specs.append(output_spec(self.config.output_size))
        specs.sort(key=lambda s: _site_order(s.name))
        return {s.name: s for s in specs}

    def _heads(self, attention: nn.Module) -> int:
        for name in ("num_heads", "num_attention_heads"):
            if isinstance(getattr(attention, name, None), int):
                return getattr(attention, name)
        return int(self.hf.config.num_attention_heads)

    def component_groups(self) -> dict[str, list[str]]:
        """memory: the recurrent-state mixers; one group per other module kind (attention, conv, mlp, moe);
        embedding and output (final norm, head). Per-layer norms belong to no group."""
        groups: dict[str, list[str]] = {"memory": []}
        for part in self._parts:
            groups.setdefault("memory" if part.kind in MEMORY_MIXERS else part.kind, []).append(part.path)
        embedding = self.hf.get_input_embeddings()
        head = self.hf.get_output_embeddings()
        names = {id(m): n for n, m in self.named_modules()}
        groups["embedding"] = [names[id(embedding)]]
        if head is not None and head.weight is not embedding.weight:
            groups["output"] = [names[id(head)]]
        return groups

    # -- computation --------------------------------------------------------------------------
    def prepare_input(self, x: Tensor) -> Tensor:
        V = self.config.vocab_size
        if x.is_floating_point() and (x.dim() != 3 or x.shape[-1] != V):
            raise ValueError(f"this model takes token ids [B, T] or soft tokens [B, T, {V}]; "
                             f"got floats {tuple(x.shape)}")
        if not x.is_floating_point() and x.dim() != 2:
            raise ValueError(f"token ids must be [B, T]; got shape {tuple(x.shape)}")
        return x

    def compute(self, x: Tensor) -> Tensor:
        with self._attached():
            if x.is_floating_point():  # soft tokens: a mixture of embedding rows
                out = self.hf(inputs_embeds=x @ self.hf.get_input_embeddings().weight, use_cache=False)
            else:
                out = self.hf(input_ids=x.long(), use_cache=False)
        return out.logits.float()

    @contextmanager
    def _attached(self) -> Iterator[None]:
        """Hooks for the sites the bus wants, removed on exit; nothing at all without a bus."""
        if self._bus is None:
            yield
            return
        with ExitStack() as stack:
            for i, layer in enumerate(self.layers):
                name = f"layers.{i}.residual"
                if self.wants(name):
                    handle = layer.register_forward_pre_hook(partial(self._input_hook, name), with_kwargs=True)
                    stack.callback(handle.remove)
            for part in self._parts:
                module = self.get_submodule(part.path)
                if self.wants(part.site):
                    handle = module.register_forward_hook(partial(self._output_hook, part.site))
                    stack.callback(handle.remove)
                pattern = f"layers.{part.layer}.attention.pattern"
                if part.kind == "attention" and self.wants(pattern):
                    module.__dict__[_PATTERN_SITE] = (self, pattern)
                    stack.callback(module.__dict__.pop, _PATTERN_SITE, None)
            yield

    def _check(self, name: str, value: Any) -> Tensor:
        if not isinstance(value, Tensor) or value.dim() != 3 or value.shape[-1] != self.hidden_size:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise RuntimeError(f"site {name}: expected a [batch, time, {self.hidden_size}] tensor, got {shape}")
        return value

    def _input_hook(self, name: str, module: nn.Module, args: tuple, kwargs: dict):
        if args:
            new = self.site_seq(name, self._check(name, args[0]))
            return (new, *args[1:]), kwargs
        new = self.site_seq(name, self._check(name, kwargs["hidden_states"]))
        return args, {**kwargs, "hidden_states": new}

    def _output_hook(self, name: str, module: nn.Module, args: tuple, output: Any):
        if isinstance(output, tuple):  # (hidden, attention weights / state / router logits)
            return (self.site_seq(name, self._check(name, output[0])), *output[1:])
        return self.site_seq(name, self._check(name, output))


def _site_order(name: str) -> tuple:
    """layers in order (layer 10 after layer 9), the output last."""
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) > 1 and parts[1].isdigit():
        return (0, int(parts[1]), ".".join(parts[2:]) != "residual", name)
    return (1, 0, True, name)
