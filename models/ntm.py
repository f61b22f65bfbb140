"""Neural Turing Machine (Graves et al. 2014) with an LSTM controller.

Each step: the controller reads `[x_t ; r_{t-1}]`; read heads, then write heads, address
the memory as it was before this step's write (content -> interpolation -> circular
shift -> sharpening); the reads are `w^T M`; then the write heads erase and add; the
output layer sees `[h_t ; r_t]`.

Several write heads are applied *combined*, as Graves et al. describe (section 3.2):
every head addresses the same pre-write memory, all erasures multiply
(order-free), then all adds sum: M <- M * prod_i(1 - w_i e_i^T) + sum_i w_i a_i^T.
With one write head this is the usual M * (1 - w e^T) + w a^T.

The addressing math lives in small pure functions over batched tensors with a heads
axis (`[B, H, ...]`), each with a step-by-step reference in tests/models/test_ntm.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import bottleneck as vib
from .cuts import check_cut, gates
from .sites import SiteModel, SiteSpec, State, controller_state_spec, output_spec, state_site

MEMORY_INITS = ("constant", "learned", "random")
INITIAL_WEIGHTS = ("zero", "learned")
HEAD_ACTIVATIONS = ("standard", "pytorch-ntm-2017")
CONSTANT_MEMORY = 1e-6  # Collier & Beel 2018: a small constant beats learned/random init
COSINE_EPS = 1e-8  # norm floor, as torch.nn.functional.cosine_similarity
TINY = 1e-16  # pytorch-ntm adds this to memory and key before the cosine, and to the sharpening sum


@dataclass
class NTMConfig:
    input_size: int = 9
    output_size: int = 8
    controller_size: int = 100
    controller_layers: int = 1
    memory_slots: int = 128  # N
    memory_width: int = 20  # M
    read_heads: int = 1
    write_heads: int = 1
    shift_range: int = 1  # shifts -S..+S, 2S+1 shift weights
    memory_init: str = "constant"  # "constant" | "learned" | "random"
    # the weightings before the first step: "learned" (Collier & Beel 2018: softmax of a learned
    # bias per head, initialised non-uniform, so even a constant memory's slots get different
    # writes) or "zero" (the first addressing sees no previous focus: with a constant memory
    # every slot then receives the same writes forever, a collapsed memory of effective rank 1)
    initial_weights: str = "learned"
    # what a stored config written before a field existed meant by leaving it out: checkpoints
    # keep their whole config, so they load and compute exactly as when they were trained
    STORED_DEFAULTS: ClassVar[dict] = {"initial_weights": "zero"}
    head_activation: str = "standard"  # "standard" | "pytorch-ntm-2017"
    bypass_dropout: float = 0.0  # training only: drop h_t's path into the output layer per sequence
    bypass_bottleneck: float | None = None  # beta of a variational bottleneck on h_t's path into the output (models/bottleneck.py)
    cut: str = "none"  # a path cut by construction, for control models (models/cuts.py)

    def __post_init__(self) -> None:
        check_cut(self.cut)
        if self.memory_init not in MEMORY_INITS:
            raise ValueError(f"memory_init must be one of {MEMORY_INITS}, not {self.memory_init!r}")
        if self.initial_weights not in INITIAL_WEIGHTS:
            raise ValueError(f"initial_weights must be one of {INITIAL_WEIGHTS}, not {self.initial_weights!r}")
        if self.head_activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"head_activation must be one of {HEAD_ACTIVATIONS}, not {self.head_activation!r}")
        if not 0.0 <= self.bypass_dropout < 1.0:
            raise ValueError(f"bypass_dropout must be in [0, 1), not {self.bypass_dropout}")
        vib.check_beta(self.bypass_bottleneck, "NTMConfig")
        for name in ("input_size", "output_size", "controller_size", "controller_layers",
                     "memory_slots", "memory_width", "read_heads", "write_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.shift_range < 0:
            raise ValueError(f"shift_range must not be negative, not {self.shift_range}")


# -- addressing (Graves et al. 2014, section 3.3); shapes: B batch, H heads, N slots, M width --

def content_weights(memory: Tensor, key: Tensor, beta: Tensor) -> Tensor:
    """softmax_n(beta * cosine(M_n + 1e-16, k + 1e-16)).
    memory [B, N, M], key [B, H, M], beta [B, H, 1] -> [B, H, N]."""
    m = memory + TINY
    k = key + TINY
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)
    cos = torch.einsum("bhm,bnm->bhn", k, m)
    return torch.softmax(beta * cos, dim=-1)


def interpolate(w_prev: Tensor, w_content: Tensor, gate: Tensor) -> Tensor:
    """g * w_c + (1 - g) * w_prev. w_* [B, H, N], gate [B, H, 1]."""
    return gate * w_content + (1 - gate) * w_prev


def shift(w: Tensor, s: Tensor) -> Tensor:
    """Circular shift: out[i] = sum_k s[k] * w[(i + k - S) mod N], S = (len(s) - 1) / 2.
    pytorch-ntm's order: s[0] weights w[i-1], i.e. moves the focus one slot forward.
    w [B, H, N], s [B, H, 2S+1] -> [B, H, N]."""
    S = (s.shape[-1] - 1) // 2
    out = torch.zeros_like(w)
    for k in range(s.shape[-1]):
        # roll by r puts w[i - r] at i; we want w[i + k - S]
        out = out + s[..., k : k + 1] * torch.roll(w, shifts=S - k, dims=-1)
    return out


def sharpen(w: Tensor, gamma: Tensor) -> Tensor:
    """w^gamma / (sum w^gamma + 1e-16). w [B, H, N], gamma [B, H, 1] (>= 1)."""
    w = w.pow(gamma)
    return w / (w.sum(dim=-1, keepdim=True) + TINY)


def address(memory: Tensor, w_prev: Tensor, key: Tensor, beta: Tensor, gate: Tensor,
            s: Tensor, gamma: Tensor) -> Tensor:
    """The full addressing chain: content, interpolation, shift, sharpening -> [B, H, N]."""
    w = content_weights(memory, key, beta)
    w = interpolate(w_prev, w, gate)
    w = shift(w, s)
    return sharpen(w, gamma)


def read(memory: Tensor, w: Tensor) -> Tensor:
    """r_h = w_h^T M. memory [B, N, M], w [B, H, N] -> [B, H, M]."""
    return torch.matmul(w, memory)


def write(memory: Tensor, w: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """Combined multi-head write: M * prod_h(1 - w_h e_h^T) + sum_h w_h a_h^T.
    memory [B, N, M], w [B, H, N], erase/add [B, H, M] -> [B, N, M]."""
    keep = (1 - w.unsqueeze(-1) * erase.unsqueeze(-2)).prod(dim=1)  # [B, N, M]
    return memory * keep + torch.einsum("bhn,bhm->bnm", w, add)


# -- head parameter activations ------------------------------------------------------------

def head_activations(raw: Tensor, M: int, n_shifts: int, style: str, writes: bool) -> dict[str, Tensor]:
    """Split one head's raw linear output [B, H, P] into k, beta, g, s, gamma (and e, a)
    in pytorch-ntm's layout, applying the chosen activation style."""
    sizes = [M, 1, 1, n_shifts, 1] + ([M, M] if writes else [])
    parts = torch.split(raw, sizes, dim=-1)
    k, beta, g, s, gamma = parts[:5]
    if style == "pytorch-ntm-2017":
        # that version's choices (they differ from its later releases)
        out = dict(key=F.relu(k), beta=F.relu(beta), gate=torch.sigmoid(g),
                   s=torch.softmax(F.relu(s), dim=-1), gamma=1 + F.relu(gamma))
        if writes:
            out.update(erase=F.relu(parts[5]), add=F.relu(parts[6]))
    else:
        out = dict(key=k, beta=F.softplus(beta), gate=torch.sigmoid(g),
                   s=torch.softmax(s, dim=-1), gamma=1 + F.softplus(gamma))
        if writes:
            out.update(erase=torch.sigmoid(parts[5]), add=torch.tanh(parts[6]))
    return out


def head_param_size(M: int, n_shifts: int, writes: bool) -> int:
    return M + 1 + 1 + n_shifts + 1 + (2 * M if writes else 0)


class Controller(nn.Module):
    """LSTM controller with learned initial h/c (as pytorch-ntm)."""

    def __init__(self, input_size: int, hidden: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, num_layers=layers)
        self.h0 = nn.Parameter(torch.randn(layers, hidden) * 0.05)
        self.c0 = nn.Parameter(torch.randn(layers, hidden) * 0.05)

    def initial(self, batch: int) -> tuple[Tensor, Tensor]:
        L, H = self.h0.shape
        return self.h0[:, None].expand(L, batch, H).contiguous(), self.c0[:, None].expand(L, batch, H).contiguous()

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(x.unsqueeze(0), state)  # one step, time-first
        return out[0], state


class NTM(SiteModel):
    arch = "ntm"
    Config = NTMConfig

    def __init__(self, config: NTMConfig):
        super().__init__(config)
        c = config
        N, M, R, W = c.memory_slots, c.memory_width, c.read_heads, c.write_heads
        self.n_shifts = 2 * c.shift_range + 1
        self.controller = Controller(c.input_size + R * M, c.controller_size, c.controller_layers)
        # one linear layer per head kind; head h's parameters are a contiguous block
        self.read_head = nn.Linear(c.controller_size, R * head_param_size(M, self.n_shifts, False))
        self.write_head = nn.Linear(c.controller_size, W * head_param_size(M, self.n_shifts, True))
        self.read_init = nn.Parameter(torch.randn(R, M) * 0.01)
        bound = 1 / (N + M) ** 0.5
        if c.memory_init == "learned":
            self.memory_bias = nn.Parameter(torch.empty(N, M).uniform_(-bound, bound))
        elif c.memory_init == "random":
            self.register_buffer("memory_bias", torch.empty(N, M).uniform_(-bound, bound))
        else:
            self.register_buffer("memory_bias", torch.full((N, M), CONSTANT_MEMORY))
        self.fc = nn.Linear(c.controller_size + R * M, c.output_size)
        if vib.wanted(c.bypass_bottleneck):
            self.bottleneck = vib.VariationalBottleneck(c.controller_size, c.bypass_bottleneck)
        if c.initial_weights == "learned":  # created last: a "zero" model's parameters draw as before
            self.read_weights_init = nn.Parameter(torch.randn(R, N))
            self.write_weights_init = nn.Parameter(torch.randn(W, N))

    def site_specs(self) -> dict[str, SiteSpec]:
        c = self.config
        N, M, R, W, H = c.memory_slots, c.memory_width, c.read_heads, c.write_heads, c.controller_size
        specs = [
            SiteSpec("memory.read", "read", (R, M), ("head", "feature"), role="memory",
                     doc="read vectors r_t (into the output and the next controller input)"),
            SiteSpec("memory.read_weights", "read_weights", (R, N), ("head", "slot"), distribution=True, doc="read weightings over memory slots"),
            SiteSpec("memory.write_weights", "write_weights", (W, N), ("head", "slot"), distribution=True, doc="write weightings over memory slots"),
            SiteSpec("memory.erase", "write", (W, M), ("head", "feature"), doc="erase vectors"),
            SiteSpec("memory.add", "write", (W, M), ("head", "feature"), doc="add vectors"),
            SiteSpec("memory.matrix", "state", (N, M), ("slot", "feature"), on_request=True, doc="memory after this step's write"),
            SiteSpec("controller.output", "bypass", (H,), ("feature",), role="bypass",
                     doc="controller h_t on its way into the output layer (not its recurrence)"
                     + ("; the bottleneck's code z of h_t (its mean at evaluation)" if self._has_bottleneck else "")),
            controller_state_spec(c.controller_layers, H),
            output_spec(c.output_size),
        ]
        return {s.name: s for s in specs}

    def component_groups(self) -> dict[str, list[str]]:
        memory = ["read_head", "write_head", "read_init"]
        if isinstance(self.memory_bias, nn.Parameter):
            memory.append("memory_bias")
        if self.config.initial_weights == "learned":
            memory += ["read_weights_init", "write_weights_init"]
        controller = ["controller"] + (["bottleneck"] if self._has_bottleneck else [])  # the bottleneck is on h_t's path
        return {"memory": memory, "controller": controller, "output": ["fc"]}

    @property
    def _has_bottleneck(self) -> bool:
        return hasattr(self, "bottleneck")

    def initial_memory(self, batch: int) -> Tensor:
        return self.memory_bias.unsqueeze(0).expand(batch, -1, -1)  # [B, N, M]

    def initial_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The read and write weightings before the first step, [B, R, N] and [B, W, N]."""
        c = self.config
        B = x.shape[0]
        if c.initial_weights == "learned":
            return (torch.softmax(self.read_weights_init, dim=-1).unsqueeze(0).expand(B, -1, -1),
                    torch.softmax(self.write_weights_init, dim=-1).unsqueeze(0).expand(B, -1, -1))
        return x.new_zeros(B, c.read_heads, c.memory_slots), x.new_zeros(B, c.write_heads, c.memory_slots)

    def _heads(self, layer: nn.Linear, h: Tensor, count: int, writes: bool) -> dict[str, Tensor]:
        raw = layer(h).view(h.shape[0], count, -1)  # [B, heads, P]
        return head_activations(raw, self.config.memory_width, self.n_shifts, self.config.head_activation, writes)

    def compute(self, x: Tensor) -> Tensor:
        return self.compute_steps(x)

    # -- the recurrence, one step at a time (the site contract's resume API) ---------------------
    @property
    def supports_resume(self) -> bool:
        return True

    def initial_state(self, x: Tensor) -> State:
        c = self.config
        B = x.shape[0]
        h, cell = self.controller.initial(B)  # [L, B, H]; the state keeps every tensor batch-first
        w_read, w_write = self.initial_weights(x)  # [B, R, N], [B, W, N]
        state = dict(memory=self.initial_memory(B),  # [B, N, M]
                     reads=self.read_init.unsqueeze(0).expand(B, -1, -1),  # [B, R, M]
                     w_read=w_read, w_write=w_write, h=h.transpose(0, 1), c=cell.transpose(0, 1))
        if self.training and c.bypass_dropout > 0:
            # stochastic depth on the non-memory path, per sequence, rescaled
            state["keep"] = (torch.rand(B, 1, device=x.device) >= c.bypass_dropout).to(x.dtype) / (1 - c.bypass_dropout)
        if self._has_bottleneck:
            self.bottleneck.reset()
        return state

    def step(self, x_t: Tensor, state: State, t: int) -> tuple[Tensor, State]:
        c = self.config
        R, W = c.read_heads, c.write_heads
        memory, reads = state["memory"], state["reads"]
        mem_gate, byp_gate, reads_in = gates(c.cut, t + 1, x_t)
        lstm_state = state_site(self, t, state["h"].transpose(0, 1).contiguous(),
                                state["c"].transpose(0, 1).contiguous(), layer_first=True)
        fed = reads if reads_in else reads * 0  # a cut (models/cuts.py) keeps reads out of the controller
        h, (hs, cs) = self.controller(torch.cat([x_t, fed.flatten(1)], dim=-1), lstm_state)  # [B, H]
        p = self._heads(self.read_head, h, R, writes=False)
        w_read = address(memory, state["w_read"], p["key"], p["beta"], p["gate"], p["s"], p["gamma"])
        w_read = self.site("memory.read_weights", w_read, t)  # [B, R, N]
        r = read(memory, w_read)  # [B, R, M], memory before this step's write
        p = self._heads(self.write_head, h, W, writes=True)
        w_write = address(memory, state["w_write"], p["key"], p["beta"], p["gate"], p["s"], p["gamma"])
        w_write = self.site("memory.write_weights", w_write, t)  # [B, W, N]
        erase = self.site("memory.erase", p["erase"], t)  # [B, W, M]
        add = self.site("memory.add", p["add"], t)
        memory = write(memory, w_write, erase, add)
        if self.wants("memory.matrix"):
            memory = self.site("memory.matrix", memory, t)  # [B, N, M]
        reads = self.site("memory.read", r, t)
        # the recurrence keeps the unedited h; the site sees what enters the output layer
        bypass = self.site("controller.output", self.bottleneck(h) if self._has_bottleneck else h, t)
        if "keep" in state:
            bypass = bypass * state["keep"]
        logits = self.fc(torch.cat([bypass * byp_gate[t], reads.flatten(1) * mem_gate[t]], dim=-1))
        new = dict(state, memory=memory, reads=reads, w_read=w_read, w_write=w_write,
                   h=hs.transpose(0, 1), c=cs.transpose(0, 1))
        return logits, new
