"""Differentiable Neural Computer (Graves et al. 2016, Nature, methods section), with the
three fixes of Csordás & Schmidhuber 2019 as opt-in flags.

One timestep, in the paper's order:

    h_t        = LSTM([x_t ; r_{t-1}])                       controller
    xi_t       = W_xi h_t                                    interface vector
    psi_t      = prod_i (1 - f^i w^{r,i}_{t-1})              retention
    u_t        = (u + w^w - u * w^w)_{t-1} * psi_t           usage
    a_t        = allocation(u_t)                             free list over sorted usage
    w^w_t      = g^w (g^a a_t + (1 - g^a) C(M_{t-1}, k^w, b^w))
    M_t        = M_{t-1} * (E - w^w e^T) + w^w v^T           erase, then add
    L_t, p_t   = temporal link matrix and precedence
    f, b       = L_t w^r_{t-1},  L_t^T w^r_{t-1}             forward / backward
    w^r_t      = pi[0] b + pi[1] C(M_t, k^r, b^r) + pi[2] f  read modes (backward, content, forward)
    r_t        = M_t^T w^r_t
    y_t        = W_y [h_t ; r_t]                             logits

Flags (all False = the original DNC):
    masking      C(M, k, b, s) = softmax(b cos(M * s, k * s)) with a sigmoid mask s per head,
                 emitted in the interface vector.
    deallocation M_t = M_{t-1} * (psi_t 1^T) * (E - w^w e^T) + w^w v^T: freed slots lose their
                 content, so stale words stop matching content look-ups.
    sharpness    f, b <- S(f, s^f), S(b, s^b) with S(d, s)_i = d_i^s / sum_j d_j^s, s = oneplus(.),
                 one exponent per read head and direction. S renormalises.

Every memory operation is a small pure batched function below; tests/models/test_dnc.py holds
a step-by-step loop reference for each.

Note on sums: the paper's write weighting sums to g^w (g^a sum(a) + 1 - g^a) <= 1 and the
forward/backward weightings sum to <= 1, so read and write weights are sub-distributions;
the missing mass is "no read/write". With `sharpness` the read weights sum to exactly 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import bottleneck as vib
from .cuts import check_cut, gates
from .sites import SiteModel, SiteSpec, State, controller_state_spec, output_spec, state_site

EPS = 1e-6  # keeps cosine similarity finite on all-zero words, and sharpening off 0 ** s

READ_MODES = ("backward", "content", "forward")  # order of the read-mode softmax, as pi[1..3] in the paper


# ---------------------------------------------------------------------------------------------
# Pure batched memory operations
# ---------------------------------------------------------------------------------------------
def oneplus(x: Tensor) -> Tensor:
    """1 + log(1 + e^x): strengths and sharpness exponents in [1, inf)."""
    return 1.0 + F.softplus(x)


def content_weighting(memory: Tensor, keys: Tensor, strengths: Tensor, mask: Tensor | None = None) -> Tensor:
    """C(M, k, beta[, s]): softmax over slots of beta * cosine(M[i], k).

    memory [B, N, W], keys [B, H, W], strengths [B, H], mask [B, H, W] in [0, 1] or None.
    Returns [B, H, N]. With a mask both the key and every memory word are multiplied by it
    (Csordás & Schmidhuber 2019), so the look-up ignores masked-out features.
    """
    mem = memory.unsqueeze(1)  # [B, 1, N, W]
    k = keys.unsqueeze(2)  # [B, H, 1, W]
    if mask is not None:
        m = mask.unsqueeze(2)  # [B, H, 1, W]
        mem, k = mem * m, k * m
    dot = (mem * k).sum(-1)  # [B, H, N]
    norms = mem.norm(dim=-1) * k.norm(dim=-1)  # [B, H, N]
    similarity = dot / (norms + EPS)
    return torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)


def retention(free_gates: Tensor, prev_read_weights: Tensor) -> Tensor:
    """psi = prod_i (1 - f^i w^{r,i}_{t-1}).  free_gates [B, R], prev_read_weights [B, R, N] -> [B, N]."""
    return (1.0 - free_gates.unsqueeze(-1) * prev_read_weights).prod(dim=1)


def update_usage(usage: Tensor, prev_write_weights: Tensor, psi: Tensor) -> Tensor:
    """u_t = (u_{t-1} + w^w_{t-1} - u_{t-1} * w^w_{t-1}) * psi.  All [B, N]."""
    return (usage + prev_write_weights - usage * prev_write_weights) * psi


def allocation(usage: Tensor) -> Tensor:
    """a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i], phi = slots sorted by ascending usage.

    usage [B, N] -> [B, N], sums to 1 - prod(u) <= 1. A stable sort breaks ties by slot index.
    """
    sorted_usage, order = torch.sort(usage, dim=-1, stable=True)  # [B, N] each
    ones = torch.ones_like(sorted_usage[:, :1])
    before = torch.cumprod(torch.cat([ones, sorted_usage[:, :-1]], dim=-1), dim=-1)  # exclusive cumprod
    sorted_alloc = (1.0 - sorted_usage) * before
    return torch.zeros_like(usage).scatter(-1, order, sorted_alloc)


def write_weighting(alloc: Tensor, content: Tensor, alloc_gate: Tensor, write_gate: Tensor) -> Tensor:
    """w^w = g^w (g^a a + (1 - g^a) c^w).  alloc, content [B, N]; gates [B, 1] -> [B, N]."""
    return write_gate * (alloc_gate * alloc + (1.0 - alloc_gate) * content)


def write_memory(memory: Tensor, write_weights: Tensor, erase: Tensor, add: Tensor, psi: Tensor | None = None) -> Tensor:
    """M_t = M_{t-1} * (E - w e^T) [* psi 1^T] + w v^T.

    memory [B, N, W], write_weights [B, N], erase/add [B, W], psi [B, N] (deallocation) or None.
    """
    w = write_weights.unsqueeze(-1)  # [B, N, 1]
    keep = 1.0 - w * erase.unsqueeze(1)  # [B, N, W]
    if psi is not None:
        keep = keep * psi.unsqueeze(-1)
    return memory * keep + w * add.unsqueeze(1)


def update_link(link: Tensor, precedence: Tensor, write_weights: Tensor) -> Tensor:
    """L_t[i, j] = (1 - w[i] - w[j]) L_{t-1}[i, j] + w[i] p_{t-1}[j], L_t[i, i] = 0.

    link [B, N, N], precedence [B, N] (p_{t-1}), write_weights [B, N] -> [B, N, N].
    """
    wi = write_weights.unsqueeze(-1)  # [B, N, 1]
    wj = write_weights.unsqueeze(-2)  # [B, 1, N]
    new = (1.0 - wi - wj) * link + wi * precedence.unsqueeze(-2)
    eye = torch.eye(link.shape[-1], dtype=torch.bool, device=link.device)
    return new.masked_fill(eye, 0.0)


def update_precedence(precedence: Tensor, write_weights: Tensor) -> Tensor:
    """p_t = (1 - sum_i w[i]) p_{t-1} + w.  [B, N] -> [B, N]."""
    return (1.0 - write_weights.sum(-1, keepdim=True)) * precedence + write_weights


def directional_weights(link: Tensor, prev_read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """forward f^i = L w^{r,i}, backward b^i = L^T w^{r,i}.

    link [B, N, N], prev_read_weights [B, R, N] -> (forward [B, R, N], backward [B, R, N]).
    """
    forward = torch.einsum("bij,brj->bri", link, prev_read_weights)
    backward = torch.einsum("bij,bri->brj", link, prev_read_weights)
    return forward, backward


def sharpen(weights: Tensor, exponent: Tensor) -> Tensor:
    """S(d, s)_i = d_i^s / sum_j d_j^s, with d offset by EPS so an empty link row gives uniform.

    weights [B, R, N], exponent [B, R] (>= 1) -> [B, R, N], sums to 1. Dividing by the row
    maximum first keeps d^s from underflowing; it cancels in the ratio.
    """
    d = weights + EPS
    d = d / d.amax(dim=-1, keepdim=True)
    d = d.pow(exponent.unsqueeze(-1))
    return d / d.sum(dim=-1, keepdim=True)


def read_weighting(backward: Tensor, content: Tensor, forward: Tensor, modes: Tensor) -> Tensor:
    """w^r = pi[0] b + pi[1] c + pi[2] f.  [B, R, N] each, modes [B, R, 3] -> [B, R, N]."""
    return modes[..., 0:1] * backward + modes[..., 1:2] * content + modes[..., 2:3] * forward


def read_memory(memory: Tensor, read_weights: Tensor) -> Tensor:
    """r^i = M^T w^{r,i}.  memory [B, N, W], read_weights [B, R, N] -> [B, R, W]."""
    return torch.einsum("bnw,brn->brw", memory, read_weights)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
@dataclass
class DNCConfig:
    input_size: int = 9
    output_size: int = 8
    controller_size: int = 64  # LSTM hidden; its input is [x_t ; r_{t-1}]
    memory_slots: int = 16  # N
    memory_width: int = 16  # W
    read_heads: int = 2  # R (one write head)
    masking: bool = False  # Csordás & Schmidhuber 2019: masked content look-up
    deallocation: bool = False  # ... erase content of freed slots
    sharpness: bool = False  # ... sharpness exponent on forward/backward weightings
    bypass_dropout: float = 0.0  # training only: drop h_t's path into the output layer per sequence
    bypass_bottleneck: float | None = None  # beta of a variational bottleneck on h_t's path into the output (models/bottleneck.py)
    cut: str = "none"  # a path cut by construction, for control models (models/cuts.py)

    def __post_init__(self) -> None:
        check_cut(self.cut)
        for name in ("input_size", "output_size", "controller_size", "memory_slots", "memory_width", "read_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DNCConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.bypass_dropout) < 1.0:
            raise ValueError(f"DNCConfig.bypass_dropout must be in [0, 1), got {self.bypass_dropout!r}")
        vib.check_beta(self.bypass_bottleneck, "DNCConfig")


class InterfaceSplit:
    """Named slices of the interface vector, in this order:

    read keys R*W | read strengths R | write key W | write strength 1 | erase W | write vector W |
    free gates R | allocation gate 1 | write gate 1 | read modes R*3
    [| read masks R*W | write mask W]            (masking)
    [| forward exponents R | backward exponents R] (sharpness)
    """

    def __init__(self, c: DNCConfig):
        R, W = c.read_heads, c.memory_width
        parts = [
            ("read_keys", R * W), ("read_strengths", R), ("write_key", W), ("write_strength", 1),
            ("erase", W), ("write_vector", W), ("free_gates", R), ("alloc_gate", 1), ("write_gate", 1),
            ("read_modes", R * 3),
        ]
        if c.masking:
            parts += [("read_masks", R * W), ("write_mask", W)]
        if c.sharpness:
            parts += [("forward_exponents", R), ("backward_exponents", R)]
        self.names = [n for n, _ in parts]
        self.sizes = [s for _, s in parts]
        self.size = sum(self.sizes)
        self.R, self.W = R, W

    def __call__(self, xi: Tensor) -> dict[str, Tensor]:
        """Raw interface [B, size] -> named parts with the paper's activations."""
        B, R, W = xi.shape[0], self.R, self.W
        raw = dict(zip(self.names, torch.split(xi, self.sizes, dim=-1)))
        out = {
            "read_keys": raw["read_keys"].view(B, R, W),
            "read_strengths": oneplus(raw["read_strengths"]),  # [B, R]
            "write_key": raw["write_key"].view(B, 1, W),
            "write_strength": oneplus(raw["write_strength"]),  # [B, 1]
            "erase": torch.sigmoid(raw["erase"]),  # [B, W]
            "write_vector": raw["write_vector"],  # [B, W]
            "free_gates": torch.sigmoid(raw["free_gates"]),  # [B, R]
            "alloc_gate": torch.sigmoid(raw["alloc_gate"]),  # [B, 1]
            "write_gate": torch.sigmoid(raw["write_gate"]),  # [B, 1]
            "read_modes": torch.softmax(raw["read_modes"].view(B, R, 3), dim=-1),
        }
        if "read_masks" in raw:
            out["read_masks"] = torch.sigmoid(raw["read_masks"]).view(B, R, W)
            out["write_mask"] = torch.sigmoid(raw["write_mask"]).view(B, 1, W)
        if "forward_exponents" in raw:
            out["forward_exponents"] = oneplus(raw["forward_exponents"])  # [B, R]
            out["backward_exponents"] = oneplus(raw["backward_exponents"])
        return out


class DNC(SiteModel):
    arch = "dnc"
    Config = DNCConfig

    def __init__(self, config: DNCConfig):
        super().__init__(config)
        c = config
        R, W = c.read_heads, c.memory_width
        self.split = InterfaceSplit(c)
        self.controller = nn.LSTMCell(c.input_size + R * W, c.controller_size)
        self.interface = nn.Linear(c.controller_size, self.split.size)
        self.head = nn.Linear(c.controller_size + R * W, c.output_size)
        if vib.wanted(c.bypass_bottleneck):
            self.bottleneck = vib.VariationalBottleneck(c.controller_size, c.bypass_bottleneck)

    def site_specs(self) -> dict[str, SiteSpec]:
        c = self.config
        R, N, W, H = c.read_heads, c.memory_slots, c.memory_width, c.controller_size
        specs = [
            SiteSpec("memory.read", "read", (R, W), ("head", "feature"), role="memory",
                     doc="read vectors r_t; feed the output at t and the controller at t+1"),
            SiteSpec("memory.read_weights", "read_weights", (R, N), ("head", "slot"), distribution=True,
                     doc="read weightings w^r_t (sum <= 1 without sharpness: forward/backward mass can be < 1)"),
            SiteSpec("memory.write_weights", "write_weights", (1, N), ("head", "slot"), distribution=True,
                     doc="write weighting w^w_t (sums to <= 1: scaled by the write gate)"),
            SiteSpec("memory.erase", "write", (1, W), ("head", "feature"), doc="erase vector e_t"),
            SiteSpec("memory.add", "write", (1, W), ("head", "feature"), doc="write vector v_t"),
            SiteSpec("memory.usage", "state", (N,), ("slot",), doc="usage u_t before allocation"),
            SiteSpec("memory.allocation", "write_weights", (N,), ("slot",),
                     doc="allocation weighting a_t (sums to 1 - prod(u) <= 1)"),
            SiteSpec("memory.read_modes", "gate", (R, 3), ("head", "mode"), distribution=True,
                     doc="read modes pi_t, order: " + ", ".join(READ_MODES)),
            SiteSpec("memory.link", "state", (N, N), ("slot", "slot"), on_request=True,
                     doc="temporal link matrix L_t[i, j]: slot i written right after slot j"),
            SiteSpec("memory.matrix", "state", (N, W), ("slot", "feature"), on_request=True,
                     doc="memory M_t after the write"),
            SiteSpec("controller.output", "bypass", (H,), ("feature",), role="bypass",
                     doc="h_t into the output layer (the recurrence keeps the untouched h_t)"
                     + ("; the bottleneck's code z of h_t (its mean at evaluation)" if self._has_bottleneck else "")),
            controller_state_spec(1, H),
            output_spec(c.output_size),
        ]
        return {s.name: s for s in specs}

    def component_groups(self) -> dict[str, list[str]]:
        controller = ["controller"] + (["bottleneck"] if self._has_bottleneck else [])  # the bottleneck is on h_t's path
        return {"memory": ["interface"], "controller": controller, "output": ["head"]}

    @property
    def _has_bottleneck(self) -> bool:
        return hasattr(self, "bottleneck")

    def compute(self, x: Tensor) -> Tensor:
        return self.compute_steps(x)

    # -- the recurrence, one step at a time (the site contract's resume API) ---------------------
    @property
    def supports_resume(self) -> bool:
        return True

    def initial_state(self, x: Tensor) -> State:
        c = self.config
        B = x.shape[0]
        R, N, W, H = c.read_heads, c.memory_slots, c.memory_width, c.controller_size
        z = x.new_zeros
        state = dict(h=z(B, H), cell=z(B, H), memory=z(B, N, W), link=z(B, N, N), usage=z(B, N),
                     precedence=z(B, N), write_w=z(B, N), read_w=z(B, R, N), reads=z(B, R, W))
        if self.training and c.bypass_dropout > 0:  # per-sequence gate on h_t's path into the output layer
            p = c.bypass_dropout
            state["keep"] = (torch.rand(B, 1, device=x.device) >= p).to(x.dtype) / (1.0 - p)  # [B, 1]
        if self._has_bottleneck:
            self.bottleneck.reset()
        return state

    def step(self, x_t: Tensor, state: State, t: int) -> tuple[Tensor, State]:
        c = self.config
        mem_gate, byp_gate, reads_in = gates(c.cut, t + 1, x_t)
        memory, link, usage, precedence = state["memory"], state["link"], state["usage"], state["precedence"]
        write_w, read_w, reads = state["write_w"], state["read_w"], state["reads"]

        h, cell = state_site(self, t, state["h"], state["cell"], layer_first=False)
        fed = reads if reads_in else reads * 0  # a cut (models/cuts.py) keeps reads out of the controller
        h, cell = self.controller(torch.cat([x_t, fed.flatten(1)], dim=-1), (h, cell))  # [B, H]
        i = self.split(self.interface(h))

        # -- write: usage -> allocation -> write weighting -> erase/add -----------------------
        psi = retention(i["free_gates"], read_w)  # [B, N]
        usage = self.site("memory.usage", update_usage(usage, write_w, psi), t)  # [B, N]
        alloc = self.site("memory.allocation", allocation(usage), t)  # [B, N]
        write_content = content_weighting(memory, i["write_key"], i["write_strength"], i.get("write_mask"))[:, 0]
        write_w = write_weighting(alloc, write_content, i["alloc_gate"], i["write_gate"])  # [B, N]
        write_w = self.site("memory.write_weights", write_w.unsqueeze(1), t)[:, 0]
        erase = self.site("memory.erase", i["erase"].unsqueeze(1), t)[:, 0]  # [B, W]
        add = self.site("memory.add", i["write_vector"].unsqueeze(1), t)[:, 0]  # [B, W]
        memory = write_memory(memory, write_w, erase, add, psi if c.deallocation else None)  # [B, N, W]
        if self.wants("memory.matrix"):
            memory = self.site("memory.matrix", memory, t)

        # -- temporal links ----------------------------------------------------------------
        link = update_link(link, precedence, write_w)  # [B, N, N]
        precedence = update_precedence(precedence, write_w)  # [B, N]
        if self.wants("memory.link"):
            link = self.site("memory.link", link, t)
        forward, backward = directional_weights(link, read_w)  # [B, R, N] each
        if c.sharpness:
            forward = sharpen(forward, i["forward_exponents"])
            backward = sharpen(backward, i["backward_exponents"])

        # -- read ------------------------------------------------------------------------------
        read_content = content_weighting(memory, i["read_keys"], i["read_strengths"], i.get("read_masks"))
        modes = self.site("memory.read_modes", i["read_modes"], t)  # [B, R, 3]
        read_w = self.site("memory.read_weights", read_weighting(backward, read_content, forward, modes), t)
        reads = self.site("memory.read", read_memory(memory, read_w), t)  # [B, R, W]

        # -- output: only this copy of h_t is exposed, the recurrence keeps the original --------
        h_out = self.site("controller.output", self.bottleneck(h) if self._has_bottleneck else h, t)  # [B, H]
        if "keep" in state:
            h_out = h_out * state["keep"]
        logits = self.head(torch.cat([h_out * byp_gate[t], reads.flatten(1) * mem_gate[t]], dim=-1))
        new = dict(state, h=h, cell=cell, memory=memory, link=link, usage=usage, precedence=precedence,
                   write_w=write_w, read_w=read_w, reads=reads)
        return logits, new
