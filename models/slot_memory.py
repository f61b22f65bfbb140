"""Slot memory: N slots written by expert choice (or token choice), read by content attention.

Each slot holds a key and a value (width W). Tokens are routed to slots by a learned affinity

    S[t] = softmax(router(x_t))[:N]                  [N]: a softmax over the N slots and one "no write"
                                                     option, which is never chosen but takes mass

and the routing decides which (token, slot) pairs write:

    expert_choice  each slot picks the top_k tokens of a chunk by S[t, i] (Zhou et al. 2022,
                   "Mixture-of-Experts with Expert Choice Routing"): every slot takes exactly
                   top_k tokens per chunk, so every slot is used by construction
    token_choice   each token picks its top_k slots by S[t] + b, with b the optional loss-free
                   balancing bias (Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy
                   for Mixture-of-Experts"): a per-slot bias for selection only, never in the gate

A chosen pair writes with gate w[t, i] = S[t, i] (the un-biased affinity), so a row of the write
weights sums to at most one over slots. The "no write" option lets a token decline to be written:
under a plain softmax over slots every token would bring the same total write mass, and expert
choice, which always takes top_k tokens, would overwrite the slots with filler as strongly as with
what matters. (A router can also learn a junk slot that takes the filler; the zoo's
`mqar-slot-memory` does that, and its key tokens use the option.) Within a chunk of C tokens slot i moves towards what it was
given, a convex blend:

    n_i = tokens assigned to slot i in the chunk;   u[t, i] = w[t, i] / max(top_k, n_i)
    a_i = sum_t u[t, i]   (at most 1)
    K_i <- (1 - a_i) K_i + sum_t u[t, i] k_t         (the same for V_i with v_t)
    m_i <- (1 - a_i) m_i + a_i                       (the mass the slot has received, in [0, 1])

and a token reads K_i / m_i and V_i / m_i: the weighted mean of what the slot was given, recent
writes weighing more (an empty slot reads as zero). A slot that picks an irrelevant token (expert
choice always picks top_k) with a small affinity barely changes, and a confident write replaces it.
Without the division a slot written with gate 0.05 would hold a key 20 times shorter than the
token's, and content attention could not find it.

Causality. Expert choice looks at every token of a chunk before it chooses, so a slot's choice at
position t depends on tokens after t. Writes therefore land at chunk boundaries: the tokens of chunk c
read the slots as they stood after chunk c - 1, and chunk c's writes become readable from chunk c + 1
on. A running top-k (each slot keeps the best k tokens seen so far and replaces one when a better
token arrives) would also be causal, but it needs a per-slot eviction rule (a replaced token's write
has to be undone) and its choices depend on where a sequence starts; chunks keep expert choice
exactly as in the MoE papers, over a set of tokens, and make the delay explicit: a token becomes
readable between 1 (the last of its chunk) and C (the first) steps after it arrives. Token choice uses the same chunk schedule, so the
two routings differ only in who chooses.

Reads: each token's query attends over the slots' keys, softmax over the N slots (the slots as they
stood at the start of its chunk), and reads the weighted sum of their values.

Loss-free balancing (token choice, balance_bias_rate u > 0): after every training forward (the model
in training mode with gradients on: one per optimiser step) the block updates its own bias from the
batch's load, b_i += u * sign(mean_j load_j - load_i). The bias is a buffer (saved in checkpoints,
never trained). It cannot change expert choice: adding b_i to column i does not reorder the tokens a
slot ranks, and every slot's load is top_k, so the update is zero.

Sites (layer-local names; a stacked model prefixes them with `layers.<i>.`), all per timestep:
  memory.write_weights  [1, N]      which slots token t was written into, with what gate (zero rows:
                                    tokens no slot chose); a row sums to at most one
  memory.read_weights   [1, N]      content attention of token t over the slots
  memory.matrix         [N, 2W]     the slots token t reads: keys then values, on request
  memory.read           [1, W]      what token t reads, before the output projection

`naive_route` and `naive_slot_memory` are plain loop references of the assignment and of the whole
forward, for the tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear_memory import NullScope
from .sites import SiteSpec

ROUTINGS = ("expert_choice", "token_choice")
MIN_MASS = 1e-6  # below this a slot counts as empty; its contents are zero anyway


def route(affinity: Tensor, routing: str, top_k: int, chunk: int, bias: Tensor | None = None) -> Tensor:
    """Bool assignment `[B, T, N]` (token t writes slot i) from affinities `[B, T, N]` in [0, 1].

    expert_choice: per chunk of `chunk` tokens, each slot's top_k tokens (all of a shorter chunk);
    token_choice: each token's top_k slots by affinity + bias."""
    B, T, N = affinity.shape
    if routing == "token_choice":
        scores = affinity if bias is None else affinity + bias
        idx = scores.topk(min(top_k, N), dim=-1).indices
        return torch.zeros_like(affinity, dtype=torch.bool).scatter_(-1, idx, True)
    C = max(1, chunk)
    pad = (-T) % C
    # padded tokens score -1, below any affinity: chosen only where a chunk has fewer than top_k tokens
    scores = F.pad(affinity, (0, 0, 0, pad), value=-1.0).reshape(B, -1, C, N)
    idx = scores.topk(min(top_k, C), dim=2).indices
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(2, idx, True)
    return mask.reshape(B, -1, N)[:, :T]


def chunk_states(u: Tensor, k: Tensor, v: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Slot keys and values `[B, T, N, W]` as each token reads them: after every earlier chunk's writes.

    u: `[B, T, N]` write shares (rows of a chunk sum to at most one per slot); k, v: `[B, T, W]`."""
    B, T, N = u.shape
    C = max(1, chunk)
    K = k.new_zeros(B, N, k.shape[-1])
    V = v.new_zeros(B, N, v.shape[-1])
    mass = u.new_zeros(B, N, 1)
    keys, values = [], []
    for start in range(0, T, C):
        end = min(start + C, T)
        scale = 1.0 / mass.clamp(min=MIN_MASS)  # empty slots (mass 0, K = V = 0) read as zero
        keys.append((K * scale).unsqueeze(1).expand(B, end - start, *K.shape[1:]))
        values.append((V * scale).unsqueeze(1).expand(B, end - start, *V.shape[1:]))
        uc = u[:, start:end]  # [B, c, N]
        a = uc.sum(1).unsqueeze(-1)  # [B, N, 1]
        K = (1.0 - a) * K + uc.transpose(1, 2) @ k[:, start:end]
        V = (1.0 - a) * V + uc.transpose(1, 2) @ v[:, start:end]
        mass = (1.0 - a) * mass + a
    return torch.cat(keys, 1), torch.cat(values, 1)


def write_shares(weights: Tensor, assigned: Tensor, top_k: int, chunk: int) -> Tensor:
    """u[t, i] = w[t, i] / max(top_k, n_i), n_i the tokens assigned to slot i in t's chunk."""
    B, T, N = weights.shape
    C = max(1, chunk)
    pad = (-T) % C
    counts = F.pad(assigned.to(weights.dtype), (0, 0, 0, pad)).reshape(B, -1, C, N).sum(2)  # [B, chunks, N]
    per_token = counts.repeat_interleave(C, dim=1)[:, :T]
    return weights / per_token.clamp(min=top_k)


class SlotMemory(nn.Module):
    """N slots written by expert or token choice, read by content attention. `forward(x [B, T, d], scope)`."""

    def __init__(self, d_model: int, slots: int = 16, width: int | None = None, top_k: int = 1,
                 routing: str = "expert_choice", chunk_size: int = 8, balance_bias_rate: float = 0.0,
                 conv_size: int = 0):
        super().__init__()
        if routing not in ROUTINGS:
            raise ValueError(f"unknown routing {routing!r}; choose one of {ROUTINGS}")
        if slots < 1 or top_k < 1 or chunk_size < 1 or d_model < 1 or conv_size < 0:
            raise ValueError("slots, top_k, chunk_size and d_model must be positive and conv_size non-negative")
        if balance_bias_rate < 0:
            raise ValueError(f"balance_bias_rate must not be negative, got {balance_bias_rate}")
        self.d_model, self.slots, self.width = d_model, slots, width or d_model
        self.top_k, self.routing, self.chunk_size = top_k, routing, chunk_size
        self.balance_bias_rate, self.conv_size = balance_bias_rate, conv_size
        W = self.width
        if conv_size:
            # a short causal depthwise convolution, so a token's key, value and route can see its
            # predecessors (the value token of a pair knows its key), as in DeltaNet/Zoology
            self.conv = nn.Conv1d(d_model, d_model, conv_size, groups=d_model, padding=conv_size - 1)
        self.router = nn.Linear(d_model, slots + 1)  # the last column: "no write"
        self.q_proj = nn.Linear(d_model, W, bias=False)
        self.k_proj = nn.Linear(d_model, W, bias=False)
        self.v_proj = nn.Linear(d_model, W, bias=False)
        self.o_proj = nn.Linear(W, d_model, bias=False)
        self.register_buffer("balance_bias", torch.zeros(slots))

    def extra_repr(self) -> str:
        return (f"slots={self.slots}, width={self.width}, top_k={self.top_k}, routing={self.routing!r}, "
                f"chunk_size={self.chunk_size}, balance_bias_rate={self.balance_bias_rate}")

    # -- sites ------------------------------------------------------------------------------
    def site_specs(self) -> list[SiteSpec]:
        N, W = self.slots, self.width
        return [
            SiteSpec("memory.write_weights", "write_weights", (1, N), ("head", "slot"), distribution=True,
                     doc=f"{self.routing.replace('_', ' ')} writes: the gate with which token t went into each "
                         f"slot (zero: not chosen); readable from the next {self.chunk_size}-token chunk on"),
            SiteSpec("memory.read_weights", "read_weights", (1, N), ("head", "slot"), distribution=True,
                     doc="content attention over the slots' keys"),
            SiteSpec("memory.matrix", "state", (N, 2 * W), ("slot", "feature"), on_request=True,
                     doc="the slots token t reads, as they stood after the previous chunk: each slot's weighted "
                         "mean of what it was given (keys, then values); zero rows: empty slots"),
            SiteSpec("memory.read", "read", (1, W), ("head", "feature"),
                     doc="read value, before the output projection"),
        ]

    # -- computation --------------------------------------------------------------------------
    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(affinity [B, T, N], q, k, v [B, T, W])."""
        if self.conv_size:
            x = self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)  # causal: drop the right padding
        affinity = torch.softmax(self.router(x), dim=-1)[..., : self.slots]
        return affinity, self.q_proj(x) * self.width ** -0.5, self.k_proj(x), self.v_proj(x)

    def forward(self, x: Tensor, scope=None) -> Tensor:
        scope = scope if scope is not None else NullScope()
        affinity, q, k, v = self.features(x)
        bias = self.balance_bias if self.routing == "token_choice" else None
        assigned = route(affinity.detach(), self.routing, self.top_k, self.chunk_size, bias)
        if self.training and torch.is_grad_enabled() and self.balance_bias_rate > 0:
            self._balance(assigned)
        w = scope.seq("memory.write_weights", (affinity * assigned).unsqueeze(2))[:, :, 0]  # [B, T, N]
        K, V = chunk_states(write_shares(w, assigned, self.top_k, self.chunk_size), k, v, self.chunk_size)
        if scope.wants("memory.matrix"):
            M = scope.seq("memory.matrix", torch.cat([K, V], dim=-1))
            K, V = M.split(self.width, dim=-1)
        r = torch.softmax(torch.einsum("btw,btnw->btn", q, K), dim=-1)
        r = scope.seq("memory.read_weights", r.unsqueeze(2))[:, :, 0]
        o = scope.seq("memory.read", torch.einsum("btn,btnw->btw", r, V).unsqueeze(2))[:, :, 0]
        return self.o_proj(o)

    @torch.no_grad()
    def _balance(self, assigned: Tensor) -> None:
        """Loss-free balancing (Wang et al. 2024): raise the bias of under-loaded slots, lower the others'."""
        load = assigned.flatten(0, 1).sum(0).to(self.balance_bias.dtype)  # [N] tokens per slot this batch
        self.balance_bias += self.balance_bias_rate * torch.sign(load.mean() - load)


# -- references: plain loops, for the tests ------------------------------------------------------

def naive_route(affinity: Tensor, routing: str, top_k: int, chunk: int, bias: Tensor | None = None) -> Tensor:
    """`route` one element at a time: sort every slot's chunk (or every token's slots) and take the first top_k."""
    B, T, N = affinity.shape
    affinity = affinity.detach()
    mask = torch.zeros(B, T, N, dtype=torch.bool)
    for b in range(B):
        if routing == "token_choice":
            for t in range(T):
                score = [float(affinity[b, t, i]) + (float(bias[i]) if bias is not None else 0.0) for i in range(N)]
                for i in sorted(range(N), key=lambda i: -score[i])[:top_k]:
                    mask[b, t, i] = True
            continue
        for start in range(0, T, chunk):
            tokens = list(range(start, min(start + chunk, T)))
            for i in range(N):
                for t in sorted(tokens, key=lambda t: -float(affinity[b, t, i]))[:top_k]:
                    mask[b, t, i] = True
    return mask


@torch.no_grad()
def naive_slot_memory(block: SlotMemory, x: Tensor) -> Tensor:
    """The block's forward token by token: read the slots, queue the token's writes, apply a chunk's
    writes when it ends. Shares the block's projections (`features`) and its routing reference."""
    affinity, q, k, v = block.features(x)
    bias = block.balance_bias if block.routing == "token_choice" else None
    assigned = naive_route(affinity, block.routing, block.top_k, block.chunk_size, bias)
    B, T, N = affinity.shape
    out = torch.zeros(B, T, block.width, dtype=x.dtype)
    for b in range(B):
        K = [torch.zeros(block.width, dtype=x.dtype) for _ in range(N)]
        V = [torch.zeros(block.width, dtype=x.dtype) for _ in range(N)]
        mass = [torch.zeros((), dtype=x.dtype) for _ in range(N)]
        pending: list[tuple[int, int]] = []  # (token, slot) written at the chunk's end
        for t in range(T):
            means = [(K[i] / max(float(mass[i]), MIN_MASS), V[i] / max(float(mass[i]), MIN_MASS)) for i in range(N)]
            scores = torch.stack([q[b, t] @ means[i][0] for i in range(N)])
            weights = torch.softmax(scores, dim=0)
            out[b, t] = sum(weights[i] * means[i][1] for i in range(N))
            pending += [(t, i) for i in range(N) if assigned[b, t, i]]
            if (t + 1) % block.chunk_size == 0 or t == T - 1:
                for i in range(N):
                    mine = [s for s, j in pending if j == i]
                    shares = [affinity[b, s, i] / max(block.top_k, len(mine)) for s in mine]
                    keep = 1.0 - sum(shares)
                    K[i] = keep * K[i] + sum((u * k[b, s] for u, s in zip(shares, mine)), torch.zeros_like(K[i]))
                    V[i] = keep * V[i] + sum((u * v[b, s] for u, s in zip(shares, mine)), torch.zeros_like(V[i]))
                    mass[i] = keep * mass[i] + (1.0 - keep)
                pending = []
    return block.o_proj(out)


__all__ = ["SlotMemory", "ROUTINGS", "route", "chunk_states", "write_shares", "naive_route", "naive_slot_memory"]
