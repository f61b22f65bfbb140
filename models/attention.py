"""Causal sliding-window multi-head attention: query t sees keys t-W+1 .. t.

Local attention is the competitor of memory in a hybrid, not memory: it can only reach the last W
steps, so anything it recalls from further back must have come through a memory layer. Its sites
therefore sit on the non-memory side of the analysis:

  attention.pattern  [H, key]     kind attention, distribution (softmax weights over keys; zero outside
                                  the window). Intervening on it replaces the weights used for the output.
  attention.heads    [H, d_head]  kind bypass: per-head outputs before the output projection.

Analysis tells local-attention sites from memory sites by the layer-local name: only names that start
with `memory.` or `ssm.` (e.g. `layers.1.memory.attention`) are the memory path; `layers.3.attention.*`
is local attention, whatever its kind.

Positions enter through rotary embeddings (RoPE) on q and k, as in the local-attention layers of hybrid
models (Griffin, Samba); without them a causal window cannot tell "the previous token" from others.

An optional short causal convolution over q, k, v (`conv_size`, as in Zoology's BaseConv hybrids) gives
each position its predecessors' tokens, so one attention layer alone can bind a key to the value that
follows it (MQAR); without it a single attention layer can find the key but not read what came after.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear_memory import NullScope
from .sites import SiteSpec


def window_mask(T: int, window: int, device=None) -> Tensor:
    """[T, T] bool, True where query t may attend key s: t - window < s <= t."""
    t = torch.arange(T, device=device)
    d = t[:, None] - t[None, :]
    return (d >= 0) & (d < window)


def rotary(x: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate pairs of features of `x [B, H, T, D]` by position-dependent angles (RoPE, half-split form)."""
    B, H, T, D = x.shape
    half = D // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    ang = torch.arange(T, dtype=torch.float32, device=x.device)[:, None] * freqs[None, :]  # [T, half]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([out, x[..., 2 * half:]], dim=-1) if D % 2 else out


class SlidingWindowAttention(nn.Module):
    """`forward(x [B, T, d_model], scope) -> [B, T, d_model]`."""

    def __init__(self, d_model: int, heads: int = 4, window: int = 16, d_head: int | None = None,
                 rope: bool = True, conv_size: int = 0):
        super().__init__()
        if conv_size < 0:
            raise ValueError(f"attention conv_size must be non-negative, got {conv_size}")
        if window < 1:
            raise ValueError(f"attention window must be at least 1, got {window}")
        if d_head is None and d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}; give d_head")
        self.heads, self.window, self.rope = heads, window, rope
        self.d_head = d_head or d_model // heads
        self.qkv = nn.Linear(d_model, 3 * heads * self.d_head, bias=False)
        self.o_proj = nn.Linear(heads * self.d_head, d_model, bias=False)
        self.conv_size = conv_size
        if conv_size:
            width = 3 * heads * self.d_head  # depthwise over q, k, v, like the memory blocks' short conv
            self.conv = nn.Conv1d(width, width, conv_size, groups=width, padding=conv_size - 1)

    def site_specs(self) -> list[SiteSpec]:
        H = self.heads
        return [
            SiteSpec("attention.pattern", "attention", (H, None), ("head", "key"), distribution=True, memory=False,
                     doc=f"local attention weights over the last {self.window} steps (not memory)"),
            SiteSpec("attention.heads", "bypass", (H, self.d_head), ("head", "feature"),
                     doc="local attention output per head, before the projection (not memory)"),
        ]

    def forward(self, x: Tensor, scope=None) -> Tensor:
        scope = scope if scope is not None else NullScope()
        B, T, _ = x.shape
        H, D = self.heads, self.d_head
        qkv = self.qkv(x)  # [B, T, 3 H D]
        if self.conv_size:
            qkv = self.conv(qkv.transpose(1, 2))[..., :T].transpose(1, 2)  # causal: drop the right padding
        q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # each [B, H, T, D]
        if self.rope:
            q, k = rotary(q), rotary(k)
        allowed = window_mask(T, self.window, x.device)
        if scope.wants("attention.pattern"):
            scores = (q @ k.transpose(-1, -2)) * D ** -0.5
            p = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # [B, H, T, T]
            p = scope.seq("attention.pattern", p.transpose(1, 2)).transpose(1, 2)
            o = p @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        o = scope.seq("attention.heads", o.transpose(1, 2))  # [B, T, H, D]
        return self.o_proj(o.reshape(B, T, H * D))
