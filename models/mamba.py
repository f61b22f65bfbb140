"""Mamba-1: a stack of selective state-space layers (Gu & Dao 2023), laid out as HF MambaForCausalLM.

The memory of a Mamba layer is its recurrent state `h` (`[d_inner, d_state]` per token):

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t        (selective: dt, B, C depend on the token)
    y_t = C_t . h_t                                    ssm.read   (what memory returns)
    out = (y_t + D * x_t) * silu(z_t)                  ssm.skip   (the D bypass), ssm.gate

Unrolled, `y_i = sum_j alpha[i, j] x_j` per channel, with the implicit attention
`alpha[i, j] = C_i . prod_{k=j+1..i} exp(dt_k A) . dt_j B_j` (Ali et al. 2024, "The Hidden
Attention of Mamba Models"), exposed as the on-request site `ssm.attention`.

Parameter names follow HF's MambaMixer/MambaBlock/MambaModel without the `backbone.` prefix,
so `models/importers/mamba_hf.py` loads a HF checkpoint by renaming prefixes only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import segsum
from .sites import SiteModel, SiteScope, SiteSpec, output_spec, prefixed


# -- the selective scan ---------------------------------------------------------------------
# Two ways to run `h_t = decay_t * h_{t-1} + inp_t` over a chunk of steps, equal to ~1e-6:
# a loop over precomputed tensors, where one step is one fused addcmul (on one CPU thread a
# whole layer ran 2-5x faster this way than with the parallel form, forward and backward, at
# d_model 32-768), and a log-depth scan: log2(chunk) large kernels instead of one per step,
# the usual choice on a GPU for long sequences (not measured here: no GPU in this project's CI).
def sequential_scan(decay: Tensor, inp: Tensor, h0: Tensor | None = None, on_step=None) -> Tensor:
    """All states along dim 1. `on_step(h, i) -> h` may replace the state after step i
    (interventions), and the replacement is what later steps build on."""
    h = h0
    states = []
    # unbind once: indexing `x[:, t]` in the loop makes the backward pass O(T^2)
    for i, (a, u) in enumerate(zip(decay.unbind(1), inp.unbind(1))):
        h = u if h is None else torch.addcmul(u, a, h)
        if on_step is not None:
            h = on_step(h, i)
        states.append(h)
    return torch.stack(states, dim=1)


def parallel_scan(decay: Tensor, inp: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """All states along dim 1 by a log-depth (Hillis-Steele) scan. Returns (states like
    `inp`, cumulative decay products), the latter so a caller can carry in a state `h0`.

    Products of decays in (0, 1] only shrink, so unlike the exp(cumsum_i - cumsum_j) form
    nothing overflows however large dt*|A| grows over a long sequence.
    """
    T = inp.shape[1]
    offset = 1
    while offset < T:
        inp = torch.cat([inp[:, :offset], decay[:, offset:] * inp[:, :-offset] + inp[:, offset:]], dim=1)
        decay = torch.cat([decay[:, :offset], decay[:, offset:] * decay[:, :-offset]], dim=1)
        offset *= 2
    if h0 is not None:
        inp = inp + decay * h0.unsqueeze(1)
    return inp, decay


SCAN_MODES = ("auto", "sequential", "parallel")


def implicit_attention(dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """Per-channel hidden attention `[batch, T(query i), d_inner, T(key j)]`.

    dt: [b, T, d_inner], A: [d_inner, d_state], B, C: [b, T, d_state]. One state dimension
    at a time keeps the peak memory at b * d_inner * T^2 instead of d_state times that.
    """
    b, T, Di = dt.shape
    alpha = dt.new_zeros(b, Di, T, T)
    log_decay = dt.transpose(1, 2).unsqueeze(-1) * A.unsqueeze(1)  # [b, Di, T, N]
    dt_c = dt.transpose(1, 2)  # [b, Di, T]
    for n in range(A.shape[1]):
        weights = torch.exp(segsum(log_decay[..., n]))  # [b, Di, T(i), T(j)]
        alpha = alpha + C[:, None, :, n, None] * weights * (dt_c * B[:, None, :, n])[:, :, None, :]
    return alpha.permute(0, 2, 1, 3)  # [b, T(i), Di, T(j)]


class SelectiveSSM(nn.Module):
    """One Mamba-1 mixer: `[B, T, d_model] -> [B, T, d_model]`, sites through a `SiteScope`.

    Parameters are named as in HF's MambaMixer (in_proj, conv1d, x_proj, dt_proj, A_log, D,
    out_proj) and initialised as there (S4D-real A, D = 1, dt bias = softplus^-1 of a
    log-uniform dt in [1e-3, 0.1]).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        conv_bias: bool = True,
        bias: bool = False,
        scan_chunk: int = 256,
        scan_mode: str = "auto",
    ):
        super().__init__()
        if min(d_model, d_state, d_conv, expand) < 1:
            raise ValueError(f"SelectiveSSM sizes must be positive: d_model={d_model}, d_state={d_state}, "
                             f"d_conv={d_conv}, expand={expand}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else int(dt_rank)
        # The scan runs over chunks of this many steps, carrying the state between them, so
        # its temporaries stay O(scan_chunk * d_inner * d_state) on long sequences.
        if scan_chunk < 1:
            raise ValueError(f"scan_chunk must be at least 1, got {scan_chunk}")
        self.scan_chunk = scan_chunk
        if scan_mode not in SCAN_MODES:
            raise ValueError(f"scan_mode must be one of {SCAN_MODES}, got {scan_mode!r}")
        # "auto": the step loop on CPU, the log-depth scan elsewhere (see sequential_scan).
        self.scan_mode = scan_mode
        Di, N, R = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * Di, bias=bias)
        self.conv1d = nn.Conv1d(Di, Di, kernel_size=d_conv, groups=Di, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(Di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, Di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(Di, 1))
        self.D = nn.Parameter(torch.ones(Di))
        self.out_proj = nn.Linear(Di, d_model, bias=bias)
        with torch.no_grad():
            std = R**-0.5
            self.dt_proj.weight.uniform_(-std, std)
            dt = torch.exp(torch.rand(Di) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def site_specs(self) -> list[SiteSpec]:
        Di, N = self.d_inner, self.d_state
        return [
            SiteSpec("ssm.input", "write", (Di,), ("channel",),
                     doc="x after the causal conv and silu: what dt*B writes into the state (and D skips past it)"),
            SiteSpec("ssm.delta", "gate", (Di,), ("channel",),
                     doc="selective step dt = softplus(dt_proj(.)): how much of x is written and of h forgotten"),
            SiteSpec("ssm.state", "state", (Di, N), ("channel", "state"), on_request=True,
                     doc="recurrent state h_t after step t; intervening runs the scan step by step"),
            SiteSpec("ssm.attention", "attention", (Di, None), ("channel", "key"), on_request=True,
                     doc="implicit attention alpha[i, j] per channel (Ali et al. 2024): y_i = sum_j alpha[i, j] x_j; "
                         "signed, not a distribution; intervening recomputes y from it"),
            SiteSpec("ssm.read", "read", (Di,), ("channel",), role="memory",
                     doc="y_t = C_t . h_t, before the D skip and the gate"),
            # the D skip carries the short conv's window (d_conv tokens) past the state: a local
            # token-shift path parallel to memory
            SiteSpec("ssm.skip", "bypass", (Di,), ("channel",), role="bypass", doc="D * x_t: the path around the state"),
            SiteSpec("ssm.gate", "gate", (Di,), ("channel",), doc="silu(z_t), multiplies read + skip"),
        ]

    def forward(self, x: Tensor, scope: SiteScope) -> Tensor:
        T = x.shape[1]
        N, R = self.d_state, self.dt_rank
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # [b, T, Di] each
        xs = F.silu(self.conv1d(xs.transpose(1, 2))[..., :T].transpose(1, 2))  # causal: drop the right padding
        xs = scope.seq("ssm.input", xs)
        dt, Bm, Cm = self.x_proj(xs).split([R, N, N], dim=-1)  # [b, T, R], [b, T, N], [b, T, N]
        dt = scope.seq("ssm.delta", F.softplus(self.dt_proj(dt)))  # [b, T, Di]
        A = -torch.exp(self.A_log.float())  # [Di, N]

        state_iv, attn_iv = scope.intervenes("ssm.state"), scope.intervenes("ssm.attention")
        if state_iv and attn_iv:
            raise ValueError(f"intervening on both {scope.name('ssm.state')} and {scope.name('ssm.attention')} "
                             "is ambiguous: each one alone determines ssm.read")
        dtype = xs.dtype
        xs32, dt32, B32, C32 = xs.float(), dt.float(), Bm.float(), Cm.float()
        y = None
        if not attn_iv or scope.wants("ssm.state"):
            y = self._scan(xs32, dt32, A, B32, C32, scope)  # [b, T, Di]
        if scope.wants("ssm.attention"):
            alpha = scope.seq("ssm.attention", implicit_attention(dt32, A, B32, C32))  # [b, T, Di, T]
            if attn_iv:
                y = torch.einsum("bidj,bjd->bid", alpha, xs32)
        y = scope.seq("ssm.read", y.to(dtype))  # [b, T, Di]
        skip = scope.seq("ssm.skip", xs * self.D)
        gate = scope.seq("ssm.gate", F.silu(z))
        return self.out_proj((y + skip) * gate)  # [b, T, d_model]

    def _scan(self, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scope: SiteScope) -> Tensor:
        """y [b, T, Di] chunk by chunk, the state carried between chunks. With an intervention on
        `ssm.state` every step goes through the site; a recording alone takes the states whole."""
        T = x.shape[1]
        intervene, record = scope.intervenes("ssm.state"), scope.wants("ssm.state")
        mode = self.scan_mode
        if mode == "auto":
            mode = "sequential" if x.device.type == "cpu" else "parallel"
        h = None
        ys, states = [], []
        for s in range(0, T, self.scan_chunk):
            e = min(T, s + self.scan_chunk)
            decay = torch.exp(dt[:, s:e, :, None] * A)  # [b, L, Di, N]
            inp = (dt[:, s:e] * x[:, s:e]).unsqueeze(-1) * B[:, s:e, None, :]  # [b, L, Di, N]
            if intervene:
                hs = sequential_scan(decay, inp, h, on_step=lambda v, i, s=s: scope.step("ssm.state", v, s + i))
            elif mode == "parallel":
                hs, _ = parallel_scan(decay, inp, h)
            else:
                hs = sequential_scan(decay, inp, h)
            h = hs[:, -1]
            ys.append(torch.einsum("bldn,bln->bld", hs, C[:, s:e]))
            if record and not intervene:
                states.append(hs)
        if states:
            scope.seq("ssm.state", torch.cat(states, dim=1))
        return torch.cat(ys, dim=1)


# -- the model ------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """As MambaRMSNorm (parameter `weight`), computed in float32."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class MambaBlock(nn.Module):
    def __init__(self, mixer: SelectiveSSM, d_model: int, eps: float):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = mixer

    def site_specs(self) -> list[SiteSpec]:
        # No site for the mixer's whole output: it carries the D skip as well as the state's
        # read, so a "read" ablation of it would charge the bypass to memory. ssm.read is the
        # memory's own contribution, ssm.skip and residual the paths around it.
        D = self.mixer.d_model
        return [
            # role None: the stream carries earlier layers' reads too, so it is neither memory nor bypass
            SiteSpec("residual", "bypass", (D,), ("feature",),
                     doc="residual stream entering the layer, added past the mixer "
                         "(an intervention here leaves the mixer's own input as it was)"),
            *self.mixer.site_specs(),
        ]

    def forward(self, h: Tensor, scope: SiteScope) -> Tensor:
        residual = scope.seq("residual", h)  # [B, T, D]
        return residual + self.mixer(self.norm(h), scope)


@dataclass
class MambaModelConfig:
    vocab_size: int | None = None  # token ids [B, T] through an embedding table
    input_size: int | None = None  # or float inputs [B, T, input_size] through a linear map
    output_size: int | None = None  # defaults to vocab_size
    d_model: int = 64
    n_layer: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # ceil(d_model / 16)
    conv_bias: bool = True
    bias: bool = False
    tie_embeddings: bool = False  # lm_head uses the embedding table (needs vocab_size == output_size)
    norm_eps: float = 1e-5


class Mamba(SiteModel):
    """embeddings -> n_layer x (h + mixer(RMSNorm(h))) -> norm_f -> lm_head, as MambaForCausalLM."""

    arch = "mamba"
    Config = MambaModelConfig

    def __init__(self, config: MambaModelConfig):
        c = config
        if (c.vocab_size is None) == (c.input_size is None):
            raise ValueError(f"mamba config needs exactly one of vocab_size (token ids) or input_size (float inputs); "
                             f"got vocab_size={c.vocab_size}, input_size={c.input_size}")
        if c.output_size is None:
            if c.vocab_size is None:
                raise ValueError("mamba config with input_size needs output_size")
            c.output_size = c.vocab_size
        if c.tie_embeddings and c.vocab_size != c.output_size:
            raise ValueError(f"tie_embeddings needs vocab_size == output_size; got vocab_size={c.vocab_size}, "
                             f"output_size={c.output_size}")
        if c.n_layer < 1:
            raise ValueError(f"n_layer must be at least 1, got {c.n_layer}")
        super().__init__(config)
        D = c.d_model
        self.embeddings = nn.Embedding(c.vocab_size, D) if c.vocab_size is not None else nn.Linear(c.input_size, D)
        self.layers = nn.ModuleList(
            MambaBlock(SelectiveSSM(D, c.d_state, c.d_conv, c.expand, c.dt_rank, c.conv_bias, c.bias), D, c.norm_eps)
            for _ in range(c.n_layer)
        )
        self.norm_f = RMSNorm(D, c.norm_eps)
        # Tied: no second parameter, so state_dict holds no shared tensors (safetensors refuses those).
        self.lm_head = None if c.tie_embeddings else nn.Linear(D, c.output_size, bias=False)

    def site_specs(self) -> dict[str, SiteSpec]:
        specs = [s for i, layer in enumerate(self.layers) for s in prefixed(f"layers.{i}", layer.site_specs())]
        specs.append(output_spec(self.config.output_size))
        return {s.name: s for s in specs}

    def component_groups(self) -> dict[str, list[str]]:
        """A partition of the parameters. In a mixer the paths share ends: in_proj makes both
        the SSM input x and the gate z, the conv output feeds both the state and the D skip,
        out_proj maps read + skip together; those go to "mixer_io", not to either side.

        memory: conv1d (a d_conv-token local memory, also upstream of the D skip), x_proj
            (dt, B, C), dt_proj, A_log: what is written to, kept in and read from the state.
        bypass: D (the skip past the state). The residual stream itself has no parameters;
            its site is `layers.{i}.residual`.
        mixer_io: in_proj, out_proj and the pre-mixer RMSNorm.
        embedding / output: the embedding table (also the output map when tied); norm_f and lm_head.
        """
        n = len(self.layers)
        memory = [f"layers.{i}.mixer.{p}" for i in range(n) for p in ("conv1d", "x_proj", "dt_proj", "A_log")]
        groups = {
            "memory": memory,
            "bypass": [f"layers.{i}.mixer.D" for i in range(n)],
            "mixer_io": [f"layers.{i}.{p}" for i in range(n) for p in ("mixer.in_proj", "mixer.out_proj", "norm")],
            "embedding": ["embeddings"],
            "output": ["norm_f"] + ([] if self.lm_head is None else ["lm_head"]),
        }
        return groups

    def prepare_input(self, x: Tensor) -> Tensor:
        c = self.config
        if c.vocab_size is None:
            return super().prepare_input(x)
        if x.is_floating_point() and (x.dim() != 3 or x.shape[-1] != c.vocab_size):
            raise ValueError(f"mamba with vocab_size={c.vocab_size} takes token ids [B, T] or soft tokens "
                             f"[B, T, {c.vocab_size}]; got a float tensor of shape {tuple(x.shape)}")
        if not x.is_floating_point() and x.dim() != 2:
            raise ValueError(f"token ids must be [B, T]; got shape {tuple(x.shape)}")
        return x

    def embed(self, x: Tensor) -> Tensor:
        if isinstance(self.embeddings, nn.Embedding) and x.is_floating_point():
            return x @ self.embeddings.weight  # soft tokens: a mixture of embedding rows
        return self.embeddings(x)

    def compute(self, x: Tensor) -> Tensor:
        h = self.embed(x)  # [B, T, D]
        for i, layer in enumerate(self.layers):
            h = layer(h, self.scope(f"layers.{i}"))  # [B, T, D]
        h = self.norm_f(h)
        if self.lm_head is None:
            return F.linear(h, self.embeddings.weight)  # [B, T, vocab]
        return self.lm_head(h)  # [B, T, out]
