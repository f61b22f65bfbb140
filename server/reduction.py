"""A long trace made as small as its figure: a window of timesteps, and max-pooling of the
time axis (and of a slot or key axis longer than the figure is wide) into at most
`max_points` equal bins.

Bins are `ceil(n / max_points)` steps wide (the last one may be shorter), so their edges
are plain timesteps: bin i covers steps `edges[i] .. edges[i+1] - 1`.

How a bin keeps its values, so that what matters in one step never averages away:

    max      weights (distributions), the mask, the loss: a single sharp read, a
             scored step, the worst step stay visible
    min      normalised entropy: the sharpest step of the bin (0 sharp .. 1 uniform)
    worst    the per-step metric: min when higher is better, else max
    absmax   everything signed (implicit attention, states, logits, inputs): the value of
             largest magnitude, with its sign. One value per bin keeps the figure's colour
             scale (diverging around 0) and shows a sharp peak of either sign; a min/max
             pair would double the answer for what one colour cell can show.

Missing values (NaN: an unscored step's metric) are skipped; a bin with none left stays NaN.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import Tensor

Rule = Literal["max", "min", "absmax"]
REDUCED_AXES = ("slot", "key")  # besides time, the axes a figure draws one cell per entry of


def bin_width(n: int, max_points: int | None) -> int:
    """Steps per bin so that `n` steps make at most `max_points` bins (1: no reduction)."""
    return 1 if not max_points or n <= max_points else math.ceil(n / max_points)


def bin_count(n: int, max_points: int | None) -> int:
    return math.ceil(n / bin_width(n, max_points)) if n else 0


def bin_edges(start: int, stop: int, max_points: int | None) -> list[int]:
    width = bin_width(stop - start, max_points)
    return [*range(start, stop, width), stop]


def pool(values: Tensor, dim: int, width: int, rule: Rule) -> Tensor:
    """`values` with axis `dim` pooled into bins of `width` entries by `rule` (same dtype).

    One pass over the data where nothing is missing (a T x T attention of 4096 steps is
    16M values): the last bin is filled up with copies of its last entry, which changes
    no max, min or largest magnitude, and each bin is a view of the axis, not a copy."""
    n = values.shape[dim]
    if width <= 1 or n == 0:
        return values
    dtype = values.dtype
    x = values if values.is_floating_point() else values.to(torch.float64)
    bins = math.ceil(n / width)
    pad = bins * width - n
    if pad:
        x = torch.cat([x, x.narrow(dim, n - 1, 1).expand(*x.shape[:dim], pad, *x.shape[dim + 1:])], dim=dim)
    x = x.unflatten(dim, (bins, width))
    missing = x.isnan()
    if missing.any():  # skipped: -inf for the max, +inf for the min; a bin of nothing but NaN stays NaN
        lo = torch.where(missing, float("inf"), x).amin(dim + 1)
        hi = torch.where(missing, float("-inf"), x).amax(dim + 1)
        empty = missing.all(dim + 1)
    else:
        lo, hi = torch.aminmax(x, dim=dim + 1)
        empty = None
    out = hi if rule == "max" else lo if rule == "min" else torch.where(lo.abs() > hi.abs(), lo, hi)
    if empty is not None:
        out = torch.where(empty, float("nan"), out)
    return out.to(dtype) if dtype.is_floating_point else out.nan_to_num(0).to(dtype)


def reduce_labelled(values: Tensor, axes: Sequence[str], rule: Rule, window: tuple[int, int] | None,
                    max_points: int | None) -> tuple[Tensor, dict[str, list[int]]]:
    """A `[batch, time, ...]` tensor cut to `window` and pooled to `max_points` bins on the
    time axis and on every slot or key axis longer than that; the edges of the pooled
    non-time axes (the time edges are the trace's, one set for every tensor)."""
    axes = list(axes)
    if window is not None:
        values = values[:, window[0]:window[1]]
    values = pool(values, 1, bin_width(values.shape[1], max_points), rule)
    bins: dict[str, list[int]] = {}
    for dim, name in enumerate(axes[2:values.dim()], start=2):
        n = values.shape[dim]
        if name in REDUCED_AXES and bin_width(n, max_points) > 1:
            values = pool(values, dim, bin_width(n, max_points), rule)
            bins[name] = bin_edges(0, n, max_points)
    return values, bins
