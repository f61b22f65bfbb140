"""A stack of residual blocks mixing linear memory, selective SSM, sliding-window attention and MLPs.

    h = embed(x)                                       # [B, T, d_model]
    for each block i:  h = h + f_i(norm_i(h))          # pre-norm residual blocks, in config order
    logits = head(norm_f(h))                           # [B, T, output_size]

`blocks` is a list such as ["memory", "mlp", "attention", "mlp"]; block kinds:
    memory     LinearMemory (models/linear_memory.py), rule and options from the config
    ssm        SelectiveSSM (models/mamba.py), imported only when used
    attention  SlidingWindowAttention (models/attention.py), window W
    mlp        two-layer GELU MLP
    slot_memory  SlotMemory (models/slot_memory.py): N slots written by expert choice or token choice
               (`routing`), read by content attention; its sites are `layers.{i}.memory.write_weights`,
               `read_weights`, `matrix`, `read` like an NTM's

Sites. Each block's residual contribution f_i(norm_i(h)) is one site `layers.{i}.<kind>.out` [d_model]:
    layers.{i}.memory.out, layers.{i}.ssm.out,       kind "read": what memory hands the residual stream
    layers.{i}.slot_memory.out
    layers.{i}.attention.out, layers.{i}.mlp.out     kind "bypass": the paths around memory
so ablating memory versus local attention is one call each: `model.ablation("memory")` and
`model.ablation("attention")` give the interventions zeroing every such block's contribution (and
`record=["layers.*.memory.out"]` records them). Inside the blocks the layers' own sites appear under the
same prefix: `layers.{i}.memory.read`, `layers.{i}.memory.attention`, `layers.{i}.attention.pattern`, ...

Which sites are the memory path: those with `SiteSpec.memory` (`is_memory_site`). Local attention's
pattern has kind "attention" like memory's implicit attention, but declares `memory=False`.

`bypass_dropout` is stochastic depth on the non-memory blocks (attention, mlp) during training only:
each sequence drops such a block's whole contribution with that probability (kept ones are scaled by
1/(1-p)), so the network cannot lean on the bypass alone. The research on hybrids advises against
putting attention blocks first; the order is the config's, so both can be tried.

`bypass_bottleneck` (beta) passes each attention block's contribution through a variational
information bottleneck (models/bottleneck.py) before its site: a Gaussian code whose KL the
training loop adds to the loss, its mean at evaluation. It needs an attention block.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import bottleneck as vib
from .attention import SlidingWindowAttention
from .cuts import check_cut, gates
from .linear_memory import LinearMemory
from .sites import Intervention, SiteModel, SiteSpec, State, output_spec, prefixed
from .slot_memory import SlotMemory

BLOCK_KINDS = ("memory", "ssm", "attention", "mlp", "slot_memory")
MEMORY_BLOCKS = ("memory", "ssm", "slot_memory")
# What each block's residual contribution is to the reliance analysis (SiteSpec.role). A linear-
# memory block's output is memory's whole contribution. An SSM block's output also carries the
# D skip, so the SSM's own sites stand for it (ssm.read: memory, ssm.skip: bypass). Local
# attention is the path parallel to memory; an MLP reads the residual stream after memory has
# written to it, in series: removing it is not "removing the bypass".
BLOCK_ROLES = {"memory": "memory", "ssm": None, "attention": "bypass", "mlp": "series", "slot_memory": "memory"}
# Blocks that can run one step at a time from a carried state (the resume API): a stack of
# only these can be resumed; any other block makes `supports_resume` False.
RESUMABLE_BLOCKS = ("memory", "mlp")
NORMS = ("rms", "layer")


@dataclass
class SequenceConfig:
    input_size: int | None = None  # continuous / one-hot input; ignored when vocab_size is set
    vocab_size: int | None = None  # token ids [B, T] through an embedding
    output_size: int = 8
    d_model: int = 64
    blocks: list[str] = field(default_factory=lambda: ["memory", "mlp"])
    norm: str = "rms"
    # memory blocks
    heads: int = 4
    d_key: int | None = None  # per head; default d_model // heads
    d_value: int | None = None
    rule: str = "delta"  # linear | retnet | gla | delta | gated_delta
    gate: str = "scalar"  # gla only: scalar (per head) | vector (over d_key)
    feature_map: str | None = None  # identity | silu | elu1; None = the rule's paper choice
    normalize_qk: bool | None = None  # None = L2-normalise for the delta rules only
    mode: str = "chunked"  # chunked | recurrent
    chunk_size: int = 32
    conv_size: int = 0  # short causal conv on q, k, v (DeltaNet/Zoology use 4); 0 = none
    output_norm: bool = True
    # attention blocks
    window: int = 16
    attention_heads: int | None = None  # default: heads
    rope: bool = True
    attention_conv_size: int = 0  # short causal conv on the attention's q, k, v (Zoology's BaseConv); 0 = none
    # ssm blocks
    ssm_d_state: int = 16
    ssm_d_conv: int = 4
    ssm_expand: int = 2
    ssm_dt_rank: int | None = None
    # mlp blocks
    mlp_ratio: int = 4
    # slot_memory blocks (models/slot_memory.py)
    slots: int = 16
    slot_width: int | None = None  # key and value width of a slot; default d_model
    slot_top_k: int = 1  # expert choice: tokens each slot takes per chunk; token choice: slots per token
    routing: str = "expert_choice"  # expert_choice (Zhou et al. 2022) | token_choice
    slot_chunk_size: int = 8  # writes land at chunk ends: readable from the next chunk on
    balance_bias_rate: float = 0.0  # token choice: loss-free balancing bias step (Wang et al. 2024); 0 = off
    bypass_dropout: float = 0.0
    # beta of a variational bottleneck on each attention block's contribution, the path parallel
    # to memory (models/bottleneck.py); None or 0: none
    bypass_bottleneck: float | None = None
    cut: str = "none"  # a path cut by construction, for control models (models/cuts.py): memory/ssm or attention blocks


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int):
        super().__init__()
        self.up = nn.Linear(d_model, ratio * d_model)
        self.down = nn.Linear(ratio * d_model, d_model)

    def site_specs(self) -> list[SiteSpec]:
        return []

    def forward(self, x: Tensor, scope=None) -> Tensor:
        return self.down(nn.functional.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, kind: str, mixer: nn.Module, d_model: int, norm: str):
        super().__init__()
        self.kind = kind
        self.norm = nn.RMSNorm(d_model, eps=1e-5) if norm == "rms" else nn.LayerNorm(d_model)
        self.mixer = mixer


def out_site(i: int, kind: str) -> str:
    """Name of block i's residual-contribution site."""
    return f"layers.{i}.{kind}.out"


def local_name(name: str) -> str:
    """`layers.3.memory.read` -> `memory.read`; other names unchanged."""
    parts = name.split(".")
    return ".".join(parts[2:]) if len(parts) > 2 and parts[0] == "layers" and parts[1].isdigit() else name


def is_memory_site(spec: SiteSpec) -> bool:
    """True for the memory path: a memory/ssm layer's site of a memory kind (local attention is not)."""
    return bool(spec.memory)


def _ssm_class():
    try:
        from .mamba import SelectiveSSM
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("mamba"):
            raise ValueError("block kind 'ssm' needs models/mamba.py (SelectiveSSM), which is not installed") from exc
        raise
    return SelectiveSSM


class SequenceModel(SiteModel):
    arch = "sequence"
    Config = SequenceConfig

    def __init__(self, config: SequenceConfig):
        super().__init__(config)
        c = config
        unknown = [b for b in c.blocks if b not in BLOCK_KINDS]
        if unknown or not c.blocks:
            raise ValueError(f"blocks {list(c.blocks)!r}: each must be one of {BLOCK_KINDS} (at least one)")
        if c.norm not in NORMS:
            raise ValueError(f"unknown norm {c.norm!r}; choose one of {NORMS}")
        if c.vocab_size is None and c.input_size is None:
            raise ValueError("sequence model needs input_size (continuous input) or vocab_size (token ids)")
        if not 0.0 <= c.bypass_dropout < 1.0:
            raise ValueError(f"bypass_dropout must be in [0, 1), got {c.bypass_dropout}")
        check_cut(c.cut)
        vib.check_beta(c.bypass_bottleneck, "SequenceConfig")
        if vib.wanted(c.bypass_bottleneck) and "attention" not in c.blocks:
            raise ValueError(f"bypass_bottleneck needs a path parallel to memory (an attention block); "
                             f"blocks {list(c.blocks)!r} have none")
        self.embed = nn.Embedding(c.vocab_size, c.d_model) if c.vocab_size is not None else nn.Linear(c.input_size, c.d_model)
        self.layers = nn.ModuleList(Block(kind, self._mixer(kind), c.d_model, c.norm) for kind in c.blocks)
        self.norm_f = nn.RMSNorm(c.d_model, eps=1e-5) if c.norm == "rms" else nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.output_size)
        if vib.wanted(c.bypass_bottleneck):
            # keyed by block index; only the parallel-path blocks get one
            self.bottlenecks = nn.ModuleDict({str(i): vib.VariationalBottleneck(c.d_model, c.bypass_bottleneck)
                                              for i, kind in enumerate(c.blocks) if BLOCK_ROLES[kind] == "bypass"})

    def _mixer(self, kind: str) -> nn.Module:
        c = self.config
        if kind == "memory":
            return LinearMemory(c.d_model, c.heads, c.d_key, c.d_value, rule=c.rule, gate=c.gate,
                                feature_map=c.feature_map, normalize_qk=c.normalize_qk, mode=c.mode,
                                chunk_size=c.chunk_size, conv_size=c.conv_size, output_norm=c.output_norm)
        if kind == "ssm":
            return _ssm_class()(c.d_model, d_state=c.ssm_d_state, d_conv=c.ssm_d_conv, expand=c.ssm_expand,
                                dt_rank=c.ssm_dt_rank)
        if kind == "slot_memory":
            return SlotMemory(c.d_model, slots=c.slots, width=c.slot_width, top_k=c.slot_top_k, routing=c.routing,
                              chunk_size=c.slot_chunk_size, balance_bias_rate=c.balance_bias_rate,
                              conv_size=c.conv_size)
        if kind == "attention":
            return SlidingWindowAttention(c.d_model, c.attention_heads or c.heads, c.window, rope=c.rope,
                                          conv_size=c.attention_conv_size)
        return MLP(c.d_model, c.mlp_ratio)

    # -- contract ---------------------------------------------------------------------------
    def site_specs(self) -> dict[str, SiteSpec]:
        d = self.config.d_model
        specs: list[SiteSpec] = []
        for i, block in enumerate(self.layers):
            specs += prefixed(f"layers.{i}", block.mixer.site_specs())
            memory = block.kind in MEMORY_BLOCKS
            specs.append(SiteSpec(out_site(i, block.kind), "read" if memory else "bypass", (d,), ("feature",),
                                  role=BLOCK_ROLES[block.kind],
                                  doc=f"{block.kind} block {i}'s contribution to the residual stream"))
        specs.append(output_spec(self.config.output_size))
        return {s.name: s for s in specs}

    def component_groups(self) -> dict[str, list[str]]:
        # full module paths, so that "layers.1.mixer" never prefixes "layers.10.mixer"
        groups: dict[str, list[str]] = {"memory": [], "attention": [], "mlp": []}
        for i, block in enumerate(self.layers):
            group = "memory" if block.kind in MEMORY_BLOCKS else block.kind
            groups[group] += [f"layers.{i}.norm", f"layers.{i}.mixer"]
            if str(i) in self._bottlenecks:
                groups[group].append(f"bottlenecks.{i}")
        groups["embedding"] = ["embed"]
        groups["output"] = ["norm_f", "head"]
        return groups

    @property
    def _bottlenecks(self) -> nn.ModuleDict | dict:
        return getattr(self, "bottlenecks", {})

    # -- helpers for analysis -------------------------------------------------------------------
    def block_sites(self, kind: str) -> list[str]:
        """Residual-contribution sites of the blocks of one kind ("memory" covers memory and ssm)."""
        kinds = MEMORY_BLOCKS if kind == "memory" else (kind,)
        if kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {kind!r}; choose one of {BLOCK_KINDS}")
        return [out_site(i, b.kind) for i, b in enumerate(self.layers) if b.kind in kinds]

    def ablation(self, kind: str, value: float | Tensor = 0.0, steps=None, rows=None) -> list[Intervention]:
        """Interventions replacing every `kind` block's residual contribution (zero by default)."""
        return [Intervention(name, value, steps=steps, rows=rows) for name in self.block_sites(kind)]

    def memory_sites(self) -> list[str]:
        """Names of the memory-path sites (see `is_memory_site`)."""
        return [n for n, s in self.site_specs().items() if is_memory_site(s)]

    # -- computation ----------------------------------------------------------------------------
    def compute(self, x: Tensor) -> Tensor:
        c = self.config
        if c.vocab_size is not None:
            if x.is_floating_point():
                raise ValueError(f"this model takes token ids [B, T] (vocab_size={c.vocab_size}), got floats {tuple(x.shape)}")
            h = self.embed(x.long())  # [B, T, d]
        else:
            if x.shape[-1] != c.input_size:
                raise ValueError(f"expected inputs [B, T, {c.input_size}], got {tuple(x.shape)}")
            h = self.embed(x)
        mem_gate, byp_gate, _ = gates(c.cut, h.shape[1], h)
        codes = self._bottlenecks
        for code in codes.values():
            code.reset()
        for i, block in enumerate(self.layers):
            r = block.mixer(block.norm(h), self.scope(f"layers.{i}"))  # [B, T, d]
            if str(i) in codes:
                r = codes[str(i)](r)  # the block's contribution becomes the bottleneck's code
            if self.training and c.bypass_dropout > 0 and block.kind not in MEMORY_BLOCKS:
                keep = (torch.rand(r.shape[0], 1, 1, device=r.device) >= c.bypass_dropout).to(r.dtype)
                r = r * keep / (1.0 - c.bypass_dropout)
            r = self.site_seq(out_site(i, block.kind), r)
            if c.cut != "none" and block.kind != "mlp":  # after the site: the cut holds under any ablation
                r = r * (mem_gate if block.kind in MEMORY_BLOCKS else byp_gate)[:, None]
            h = h + r
        return self.head(self.norm_f(h))  # [B, T, out]

    # -- one step at a time (the site contract's resume API) ---------------------------------------
    # Memory blocks run their recurrent form (equal to the chunked one within float rounding);
    # MLPs and norms act on each position alone. Stacks with other blocks are not resumable.
    @property
    def supports_resume(self) -> bool:
        return all(block.kind in RESUMABLE_BLOCKS for block in self.layers)

    def initial_state(self, x: Tensor) -> State:
        if not self.supports_resume:
            raise NotImplementedError(f"only stacks of {RESUMABLE_BLOCKS} blocks can be resumed step by step")
        if self.training and self.config.bypass_dropout > 0:
            raise ValueError("a stack resumed step by step runs for analysis: put the model in eval mode")
        state: State = {}
        for i, block in enumerate(self.layers):
            if block.kind == "memory":
                layer = block.mixer.initial_state(x.shape[0], self.head.weight)
                state.update({f"layers.{i}.{name}": value for name, value in layer.items()})
        return state

    def step(self, x_t: Tensor, state: State, t: int) -> tuple[Tensor, State]:
        c = self.config
        h = self.embed(x_t.long()) if c.vocab_size is not None else self.embed(x_t)  # [B, d]
        mem_gate, byp_gate, _ = gates(c.cut, t + 1, h)
        new: State = {}
        for i, block in enumerate(self.layers):
            if block.kind == "memory":
                prefix = f"layers.{i}."
                own = {name[len(prefix):]: v for name, v in state.items() if name.startswith(prefix)}
                r, own = block.mixer.step(block.norm(h), own, self.scope(f"layers.{i}"), t)
                new.update({prefix + name: v for name, v in own.items()})
            else:
                r = block.mixer(block.norm(h))
            r = self.site(out_site(i, block.kind), r, t)
            if c.cut != "none" and block.kind != "mlp":  # after the site, as in `compute`
                r = r * (mem_gate if block.kind in MEMORY_BLOCKS else byp_gate)[t]
            h = h + r
        return self.head(self.norm_f(h)), new
