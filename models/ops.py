"""Tensor operations shared by more than one architecture."""
from __future__ import annotations

import torch
from torch import Tensor


def segsum(x: Tensor, dim: int = -1) -> Tensor:
    """Segment sums of log-decays along the time axis `dim`, which becomes two axes (t, s):
    `out[..., t, s, ...] = sum_{i=s+1..t} x[..., i, ...]` for s <= t, -inf above the diagonal
    (so `exp(out)` is the decay from step s to step t, zero where s is after t).

    Mamba-2's masked cumulative sum rather than a difference of prefix sums: exact for decays
    of zero (log = -inf) and free of cancellation when the prefix sums are large."""
    dim = dim % x.dim()
    T = x.shape[dim]
    x = x.movedim(dim, -1)
    xr = x.unsqueeze(-1).expand(*x.shape, T)  # [..., i, s] = x_i
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)
    out = torch.cumsum(xr.masked_fill(~strict, 0.0), dim=-2)  # [..., t, s] = sum_{s < i <= t} x_i
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
    return out.masked_fill(~causal, float("-inf")).movedim((-2, -1), (dim, dim + 1))
