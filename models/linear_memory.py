"""Linear-memory layer: one matrix state per head, written and read every step.

    S_t = T_t S_{t-1} + beta_t k_t v_t^T        (state per head: [d_k, d_v])
    o_t = S_t^T q_t

with the update rule a config choice:

    linear       T_t = I,                          beta = 1   (linear attention)
    retnet       T_t = gamma_h I,                  beta = 1   (fixed per-head decay, gamma_h = 1 - 2^(-5-h))
    gla          T_t = diag(alpha_t),              beta = 1   (data-dependent decay: scalar per head as
                                                               Mamba-2, or a vector over d_k as GLA/RWKV-6)
    delta        T_t = I - beta_t k_t k_t^T                   (DeltaNet: S += beta k (v - S^T k)^T)
    gated_delta  T_t = alpha_t (I - beta_t k_t k_t^T)         (Gated DeltaNet: S *= alpha first, then delta)

Decay forms: gla uses GLA's alpha_t = sigmoid(W x_t + b)^(1/16) (log alpha = logsigmoid/16, so the
memory forgets slowly at init); gated_delta uses Mamba-2's alpha_t = exp(-exp(A_log) softplus(W x_t + dt_bias)).

Two implementations compute the same thing:
  chunked    within a chunk all pairs at once (a masked matmul with pairwise decays); across chunks the
             state is carried. The delta rules use the UT/WY transform of Yang et al. 2024 ("Parallelizing
             linear transformers with the delta rule over sequence length"): inside a chunk the pseudo-values
             U solve a unit-lower-triangular system (I + A) U = diag(beta)(V - diag(gamma) K S_0).
  recurrent  the step-by-step recurrence. Recording or intervening on `memory.state` uses it, because the
             state has to exist at every step for that.

Sites (layer-local names; a stacked model prefixes them with `layers.<i>.`), all per timestep:
  memory.write.key    [H, d_k]  kind write   the key written (after feature map / normalisation)
  memory.write.value  [H, d_v]  kind write
  memory.write.beta   [H]       kind write   write strength (delta rules only)
  memory.decay        [H] or [H, d_k]  kind gate   alpha_t (retnet, gla, gated_delta)
  memory.read         [H, d_v]  kind read    o_t = S_t^T q_t, before the output norm and projection
  memory.state        [H, d_k, d_v]  kind state, on request
  memory.attention    [H, key]  kind attention, on request: the implicit attention o_t = sum_s A[t,s] v_s,
                      A[t,s] = q_t^T P_{t,s+1} beta_s k_s with P the product of the transitions T_{s+1..t}.
                      It is exact for every rule (computed in float64). Intervening on it replaces the read:
                      o_t = sum_s A'[t,s] v_s.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .sites import SiteSpec

RULES = ("linear", "retnet", "gla", "delta", "gated_delta")
GATES = ("scalar", "vector")
FEATURE_MAPS = ("identity", "silu", "elu1")
MODES = ("chunked", "recurrent")
DELTA_RULES = ("delta", "gated_delta")
# The papers' choices: linear attention / RetNet / GLA read raw projections; DeltaNet and Gated
# DeltaNet put q, k through SiLU and then L2-normalise them (which keeps I - beta k k^T contractive).
DEFAULT_FEATURE_MAP = {"linear": "identity", "retnet": "identity", "gla": "identity", "delta": "silu", "gated_delta": "silu"}


class NullScope:
    """A scope that records nothing, for using a layer outside a SiteModel."""

    def name(self, name: str) -> str:
        return name

    def step(self, name: str, value: Tensor, t: int) -> Tensor:
        return value

    def seq(self, name: str, value: Tensor) -> Tensor:
        return value

    def wants(self, name: str) -> bool:
        return False

    def intervenes(self, name: str) -> bool:
        return False


def retnet_gammas(heads: int) -> Tensor:
    """RetNet's fixed per-head decays 1 - 2^(-5-h)."""
    return 1.0 - torch.pow(2.0, -5.0 - torch.arange(heads, dtype=torch.float64))


# log-decays here are [..., T, G] (G = 1 or d_k): time is the second-to-last axis,
# and segsum's result [..., T, T, G] keeps G last
segsum = functools.partial(ops.segsum, dim=-2)


def _rev_exclusive_cumsum(x: Tensor, dim: int) -> Tensor:
    """[s] = sum_{i > s} x_i along `dim`; shifted rather than `total - x`, which -inf would break."""
    shifted = torch.cat([x.narrow(dim, 1, x.shape[dim] - 1), torch.zeros_like(x.narrow(dim, 0, 1))], dim)
    return torch.flip(torch.cumsum(torch.flip(shifted, [dim]), dim), [dim])


def pair_scores(q: Tensor, k: Tensor, lg: Tensor | None, diagonal: int = 0) -> Tensor:
    """M[t, s] = q_t^T diag(prod_{i=s+1..t} alpha_i) k_s on the lower triangle, zero elsewhere.

    q, k: [..., T, K]; lg: [..., T, G] log-decays with G in {1, K}, or None (no decay).
    diagonal=0 keeps s <= t, diagonal=-1 keeps s < t."""
    T = q.shape[-2]
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool, device=q.device), diagonal=diagonal)
    if lg is None:
        return (q @ k.transpose(-1, -2)).masked_fill(~keep, 0.0)
    D = torch.exp(segsum(lg))  # [..., T, T, G], zero above the diagonal
    if lg.shape[-1] == 1:
        M = (q @ k.transpose(-1, -2)) * D[..., 0]
    else:
        M = torch.einsum("...td,...sd,...tsd->...ts", q, k, D)
    return M.masked_fill(~keep, 0.0)


def chunked_memory(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, lg: Tensor | None,
                   chunk: int) -> Tensor:
    """Outputs o_t = S_t^T q_t of the linear-memory recurrence, chunk by chunk.

    q, k: [B, H, T, K]; v: [B, H, T, V]; beta: [B, H, T] (delta rules) or None; lg: [B, H, T, G]
    log-decays (G = 1 or K) or None. Returns [B, H, T, V]."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    C = max(1, min(chunk, T))
    pad = (-T) % C
    if pad:
        # zero keys/queries and decay 1 (log 0) leave the state untouched; beta 0 makes the delta step identity
        q, k, v = (F.pad(a, (0, 0, 0, pad)) for a in (q, k, v))
        beta = F.pad(beta, (0, pad)) if beta is not None else None
        lg = F.pad(lg, (0, 0, 0, pad)) if lg is not None else None
    N = (T + pad) // C
    q, k, v = (a.reshape(B, H, N, C, a.shape[-1]) for a in (q, k, v))
    if beta is not None:
        beta = beta.reshape(B, H, N, C)
    if lg is not None:
        lg = lg.reshape(B, H, N, C, lg.shape[-1])
        gam = torch.exp(torch.cumsum(lg, dim=-2))  # [B,H,N,C,G] decay of the chunk's start state by step t
        rem = torch.exp(_rev_exclusive_cumsum(lg, dim=-2))  # decay from step s to the chunk's end
        tot = torch.exp(lg.sum(dim=-2))  # [B,H,N,G]
    M = pair_scores(q, k, lg)  # [B,H,N,C,C] intra-chunk scores, s <= t

    if beta is None:
        u = v
    else:
        # UT transform: (I + A) U = diag(beta) (V - diag(gamma) K S_0), A strictly lower
        Akk = pair_scores(k, k, lg, diagonal=-1) * beta.unsqueeze(-1)
        eye = torch.eye(C, dtype=q.dtype, device=q.device)
        L = eye + Akk
        kg = k * gam if lg is not None else k
        W = torch.linalg.solve_triangular(L, beta.unsqueeze(-1) * kg, upper=False, unitriangular=True)
        U0 = torch.linalg.solve_triangular(L, beta.unsqueeze(-1) * v, upper=False, unitriangular=True)

    S = q.new_zeros(B, H, K, V)
    outs = []
    for n in range(N):
        qn, kn = q[:, :, n], k[:, :, n]
        un = u[:, :, n] if beta is None else U0[:, :, n] - W[:, :, n] @ S
        qg = qn * gam[:, :, n] if lg is not None else qn
        outs.append(qg @ S + M[:, :, n] @ un)
        kr = kn * rem[:, :, n] if lg is not None else kn
        S = (tot[:, :, n].unsqueeze(-1) * S if lg is not None else S) + kr.transpose(-1, -2) @ un
    o = torch.stack(outs, dim=2).reshape(B, H, N * C, V)
    return o[:, :, :T]


def implicit_attention(q: Tensor, k: Tensor, beta: Tensor | None, lg: Tensor | None) -> Tensor:
    """A [B, H, T, T] with o_t = sum_s A[t, s] v_s, exact for every rule.

    A = M (I + A_kk)^{-1} diag(beta): the chunked form with one chunk and an empty start state, where M
    holds the decayed scores q_t.k_s (s <= t) and A_kk the decayed beta_j k_j.k_i (i < j). In float64."""
    q, k = q.double(), k.double()
    lg = lg.double() if lg is not None else None
    M = pair_scores(q, k, lg)
    if beta is None:
        return M
    beta = beta.double()
    T = q.shape[-2]
    L = torch.eye(T, dtype=q.dtype, device=q.device) + pair_scores(k, k, lg, diagonal=-1) * beta.unsqueeze(-1)
    # M L^{-1} diag(beta) = (L^{-T} M^T)^T diag(beta)
    X = torch.linalg.solve_triangular(L.transpose(-1, -2), M.transpose(-1, -2), upper=True, unitriangular=True)
    return X.transpose(-1, -2) * beta.unsqueeze(-2)


def update_state(S: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, lg: Tensor | None) -> Tensor:
    """One step of the recurrence: S [B, H, K, V]; k [B, H, K]; v [B, H, V]; beta [B, H] or None;
    lg [B, H, G] log-decay or None -> the new S."""
    if lg is not None:
        S = torch.exp(lg).unsqueeze(-1) * S  # [B,H,G,1] scales rows (d_k) or all
    if beta is not None:
        err = v - torch.einsum("bhkv,bhk->bhv", S, k)
        return S + beta[:, :, None, None] * k.unsqueeze(-1) * err.unsqueeze(-2)
    return S + k.unsqueeze(-1) * v.unsqueeze(-2)


def read_state(S: Tensor, q: Tensor) -> Tensor:
    """o = S^T q. S [B, H, K, V], q [B, H, K] -> [B, H, V]."""
    return torch.einsum("bhkv,bhk->bhv", S, q)


def recurrent_memory(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, lg: Tensor | None,
                     scope=None) -> Tensor:
    """The step-by-step recurrence; the state passes through the `memory.state` site each step."""
    B, H, T, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1])
    outs = []
    for t in range(T):
        S = update_state(S, k[:, :, t], v[:, :, t], beta[:, :, t] if beta is not None else None,
                         lg[:, :, t] if lg is not None else None)
        if scope is not None:
            S = scope.step("memory.state", S, t)
        outs.append(read_state(S, q[:, :, t]))
    return torch.stack(outs, dim=2)


class LinearMemory(nn.Module):
    """Multi-head linear memory with a choice of update rule. `forward(x [B, T, d_model], scope)`."""

    def __init__(self, d_model: int, heads: int = 4, d_k: int | None = None, d_v: int | None = None,
                 rule: str = "delta", gate: str = "scalar", feature_map: str | None = None,
                 normalize_qk: bool | None = None, mode: str = "chunked", chunk_size: int = 32,
                 conv_size: int = 0, output_norm: bool = True):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown memory rule {rule!r}; choose one of {RULES}")
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; choose one of {GATES}")
        if rule != "gla" and gate != "scalar":
            raise ValueError(f"gate={gate!r} applies to rule 'gla' only (rule {rule!r} has a scalar or no decay)")
        feature_map = feature_map or DEFAULT_FEATURE_MAP[rule]
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"unknown feature_map {feature_map!r}; choose one of {FEATURE_MAPS}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        if heads < 1 or d_model < 1 or chunk_size < 1 or conv_size < 0:
            raise ValueError("heads, d_model and chunk_size must be positive and conv_size non-negative")
        if d_k is None or d_v is None:
            if d_model % heads:
                raise ValueError(f"d_model={d_model} is not divisible by heads={heads}; give d_k and d_v")
        self.d_model, self.heads = d_model, heads
        self.d_k = d_k or d_model // heads
        self.d_v = d_v or d_model // heads
        self.rule, self.gate, self.feature_map, self.mode = rule, gate, feature_map, mode
        self.normalize_qk = rule in DELTA_RULES if normalize_qk is None else normalize_qk
        self.chunk_size, self.conv_size = chunk_size, conv_size
        H, K, V = heads, self.d_k, self.d_v

        self.q_proj = nn.Linear(d_model, H * K, bias=False)
        self.k_proj = nn.Linear(d_model, H * K, bias=False)
        self.v_proj = nn.Linear(d_model, H * V, bias=False)
        self.o_proj = nn.Linear(H * V, d_model, bias=False)
        if conv_size:
            # DeltaNet/Zoology-style short causal depthwise convolution over q, k, v
            width = 2 * H * K + H * V
            self.conv = nn.Conv1d(width, width, conv_size, groups=width, padding=conv_size - 1)
        if rule in DELTA_RULES:
            self.b_proj = nn.Linear(d_model, H)
        if rule == "retnet":
            self.register_buffer("log_gamma", torch.log(retnet_gammas(H)).float(), persistent=False)
        if rule == "gla":
            self.g_proj = nn.Linear(d_model, H * K if gate == "vector" else H)
        if rule == "gated_delta":
            self.a_proj = nn.Linear(d_model, H)
            # Mamba-2 initialisation: A in [1, 16], softplus(dt_bias) log-uniform in [1e-3, 1e-1]
            self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
            dt = torch.exp(torch.empty(H).uniform_(math.log(1e-3), math.log(1e-1)))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.o_norm = nn.RMSNorm(V, eps=1e-5) if output_norm else None

    # -- sites ------------------------------------------------------------------------------
    def site_specs(self) -> list[SiteSpec]:
        H, K, V = self.heads, self.d_k, self.d_v
        specs = [
            SiteSpec("memory.write.key", "write", (H, K), ("head", "key"), doc=f"key written ({self.feature_map} feature map{', L2-normalised' if self.normalize_qk else ''})"),
            SiteSpec("memory.write.value", "write", (H, V), ("head", "value"), doc="value written"),
        ]
        if self.rule in DELTA_RULES:
            specs.append(SiteSpec("memory.write.beta", "write", (H,), ("head",), doc="delta-rule write strength, sigmoid"))
        if self.rule in ("retnet", "gla", "gated_delta"):
            vector = self.rule == "gla" and self.gate == "vector"
            specs.append(SiteSpec("memory.decay", "gate", (H, K) if vector else (H,), ("head", "key") if vector else ("head",),
                                  doc=f"{self.rule} decay alpha_t multiplying the state (1 = keep)"))
        specs += [
            # role None: the block's output site (layers.{i}.memory.out) stands for memory's contribution
            SiteSpec("memory.read", "read", (H, V), ("head", "value"), doc="o_t = S_t^T q_t, before output norm and projection"),
            SiteSpec("memory.state", "state", (H, K, V), ("head", "key", "value"), on_request=True,
                     doc="memory matrix S_t per head; asking for it runs the step-by-step recurrence"),
            SiteSpec("memory.attention", "attention", (H, None), ("head", "key"), on_request=True,
                     doc="implicit attention A[t,s]: o_t = sum_s A[t,s] v_s (exact for every rule)"),
        ]
        return specs

    # -- computation --------------------------------------------------------------------------
    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        T = x.shape[1]
        qkv = self._projections(x)
        if self.conv_size:
            qkv = self.conv(qkv.transpose(1, 2))[..., :T].transpose(1, 2)  # causal: drop the right padding
        return self._maps(qkv)

    def _projections(self, x: Tensor) -> Tensor:
        """[B, T, d_model] -> q, k, v side by side [B, T, 2 H K + H V], before the conv."""
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)

    def _maps(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Projections (after the conv) -> q, k, v [B, T, H, K|V] with feature map, norm and scale."""
        B, T, _ = qkv.shape
        H, K, V = self.heads, self.d_k, self.d_v
        q, k, v = qkv.split([H * K, H * K, H * V], dim=-1)
        q, k, v = q.view(B, T, H, K), k.view(B, T, H, K), v.view(B, T, H, V)
        if self.feature_map == "silu":
            q, k = F.silu(q), F.silu(k)
        elif self.feature_map == "elu1":
            q, k = F.elu(q) + 1, F.elu(k) + 1
        if self.normalize_qk:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        return q * K ** -0.5, k, v

    def _log_decay(self, x: Tensor) -> Tensor | None:
        """[B, T, H] or [B, T, H, K] log alpha_t."""
        B, T, _ = x.shape
        if self.rule == "retnet":
            return self.log_gamma.to(x.dtype).expand(B, T, self.heads)
        if self.rule == "gla":
            g = F.logsigmoid(self.g_proj(x)) / 16  # GLA's normaliser: alpha = sigmoid(.)^(1/16)
            return g.view(B, T, self.heads, self.d_k) if self.gate == "vector" else g
        if self.rule == "gated_delta":
            return -torch.exp(self.A_log) * F.softplus(self.a_proj(x) + self.dt_bias)
        return None

    def forward(self, x: Tensor, scope=None) -> Tensor:
        scope = scope if scope is not None else NullScope()
        B, T, _ = x.shape
        q, k, v = self._features(x)  # [B, T, H, K|V]
        k = scope.seq("memory.write.key", k)
        v = scope.seq("memory.write.value", v)
        beta = None
        if self.rule in DELTA_RULES:
            beta = scope.seq("memory.write.beta", torch.sigmoid(self.b_proj(x)))  # [B, T, H]
        lg = self._log_decay(x)
        if lg is not None:
            alpha = scope.seq("memory.decay", torch.exp(lg))
            if scope.intervenes("memory.decay"):
                lg = torch.log(alpha)  # a forced decay of 0 becomes -inf, which segsum handles exactly
        # heads first: [B, H, T, *]; decays get a trailing axis G (1 for scalar decays)
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        bh = beta.transpose(1, 2) if beta is not None else None
        lgh = None
        if lg is not None:
            lgh = lg.transpose(1, 2) if lg.dim() == 4 else lg.transpose(1, 2).unsqueeze(-1)

        if scope.intervenes("memory.state") and scope.intervenes("memory.attention"):
            raise ValueError(f"intervening on both {scope.name('memory.state')} and {scope.name('memory.attention')} "
                             "is ambiguous: each one alone determines memory.read")
        if scope.wants("memory.state") or self.mode == "recurrent":
            o = recurrent_memory(qh, kh, vh, bh, lgh, scope)
        else:
            o = chunked_memory(qh, kh, vh, bh, lgh, self.chunk_size)
        if scope.wants("memory.attention"):
            A = implicit_attention(qh, kh, bh, lgh).to(x.dtype)  # [B, H, T, T]
            A = scope.seq("memory.attention", A.transpose(1, 2)).transpose(1, 2)
            if scope.intervenes("memory.attention"):
                o = A @ vh
        o = scope.seq("memory.read", o.transpose(1, 2))  # [B, T, H, V]
        if self.o_norm is not None:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(B, T, self.heads * self.d_v))

    # -- one step at a time (the site contract's resume API; always the recurrent form) --------
    def initial_state(self, batch: int, like: Tensor) -> dict[str, Tensor]:
        """The state entering step 0: the memory matrices and, with a conv, its last inputs."""
        state = {"memory": like.new_zeros(batch, self.heads, self.d_k, self.d_v)}
        if self.conv_size:
            state["conv"] = like.new_zeros(batch, self.conv_size - 1, self.conv.in_channels)
        return state

    def step(self, x: Tensor, state: dict[str, Tensor], scope, t: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Timestep t of `forward`: x [B, d_model] -> (output [B, d_model], the state entering t + 1).
        Equal to `forward`'s step t within float rounding (the chunked form sums in another order)."""
        if scope.wants("memory.attention"):
            raise ValueError(f"{scope.name('memory.attention')} spans every earlier step; a run resumed "
                             "step by step does not have it")
        B = x.shape[0]
        new = dict(state)
        qkv = self._projections(x[:, None])  # [B, 1, width]
        if self.conv_size:
            window = torch.cat([state["conv"], qkv], dim=1)  # [B, conv_size, width], oldest first
            new["conv"] = window[:, 1:]
            qkv = (torch.einsum("bjw,wj->bw", window, self.conv.weight[:, 0]) + self.conv.bias)[:, None]
        q, k, v = (a[:, 0] for a in self._maps(qkv))  # [B, H, K|V]
        k = scope.step("memory.write.key", k, t)
        v = scope.step("memory.write.value", v, t)
        beta = None
        if self.rule in DELTA_RULES:
            beta = scope.step("memory.write.beta", torch.sigmoid(self.b_proj(x)), t)  # [B, H]
        lg = self._log_decay(x[:, None])
        if lg is not None:
            lg = lg[:, 0]  # [B, H] or [B, H, K]
            alpha = scope.step("memory.decay", torch.exp(lg), t)
            if scope.intervenes("memory.decay"):
                lg = torch.log(alpha)
            lg = lg if lg.dim() == 3 else lg.unsqueeze(-1)  # [B, H, G]
        S = update_state(state["memory"], k, v, beta, lg)
        new["memory"] = S = scope.step("memory.state", S, t)
        o = scope.step("memory.read", read_state(S, q), t)  # [B, H, V]
        if self.o_norm is not None:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(B, self.heads * self.d_v)), new
