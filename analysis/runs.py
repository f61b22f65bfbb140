"""Shared plumbing: forward passes, tiling a batch into variant rows, the row budget, and
comparing outputs.

Output change between a reference run and another run, per position:
  - `prob_change`: mean absolute change of the output probabilities, per output unit.
    For bit outputs (independent Bernoullis) it is the mean over bits of |p' - p|; for
    class outputs it is the total-variation distance 1/2 sum |p' - p|. Both lie in
    [0, 1]: 0 = identical outputs, 1 = certain and opposite.
  - `kl`: KL(reference || other) of the whole output distribution at the position, in
    nats (for bits: the sum of the per-bit Bernoulli KLs, the KL of the joint).
  - `flips`: share of predictions that change (bits: thresholded at 0.5; classes: argmax).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.sites import Intervention, SiteModel, SiteSpec, hooks
from ..models.tasks.base import Batch, Task
from .sites import model_device, step_size

Progress = Callable[[float], None]


def report(progress: Progress | None, value: float) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, float(value))))


def sub_progress(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A progress callback mapping 0..1 onto [start, end] of the parent's range."""
    if progress is None:
        return None
    return lambda f: progress(start + (end - start) * min(1.0, max(0.0, float(f))))


def forward(model: SiteModel, inputs: Tensor, record: Sequence[str] = (),
            interventions: Sequence[Intervention] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """One no-grad forward pass on the model's device; returns logits and the recorded
    site values `[B, T, *shape]`, on the CPU where the tasks score them."""
    device = model_device(model)
    with torch.no_grad(), hooks(model, list(record), interventions) as trace:
        logits = model(inputs.to(device))
    return logits.cpu(), {n: trace[n].cpu() for n in record}


def tile(x: Tensor, k: int) -> Tensor:
    """Rows [x0, x1, ..., x0, x1, ...]: k consecutive blocks, block j = variant j."""
    return x.repeat(k, *([1] * (x.dim() - 1)))


def tile_batch(batch: Batch, k: int) -> Batch:
    return Batch(tile(batch.inputs, k), tile(batch.targets, k), tile(batch.mask, k))


def bytes_per_row(specs: dict[str, SiteSpec], steps: int) -> int:
    """A rough upper estimate of the memory one batch row costs in a no-grad forward pass:
    every always-on site value for every step (what a step-wise model keeps for its
    outputs), on-request state held once, times a safety factor of 4 for temporaries."""
    floats = 0
    for spec in specs.values():
        n = math.prod(step_size(spec, steps))
        floats += n if spec.on_request else n * steps
    return 4 * 4 * floats


def rows_per_chunk(specs: dict[str, SiteSpec], steps: int, block: int, budget_mb: float) -> int:
    """How many whole blocks of `block` rows fit the memory budget (at least one)."""
    if budget_mb <= 0:
        raise ValueError(f"memory budget must be positive, got {budget_mb} MB")
    per_block = bytes_per_row(specs, steps) * block
    return max(1, int(budget_mb * 2**20 // max(per_block, 1)))


# -- comparing outputs -----------------------------------------------------------------------

@dataclass
class OutputChange:
    """Per-position comparison `[B, T]` of one run against a reference run."""

    prob_change: Tensor
    kl: Tensor
    flips: Tensor

    def mean_over(self, mask: Tensor) -> tuple[float, float, float]:
        """(prob_change, kl, flips) averaged over the positions where mask is True."""
        m = mask.float()
        n = m.sum().clamp(min=1)
        return tuple(float((v * m).sum() / n) for v in (self.prob_change, self.kl, self.flips))  # type: ignore[return-value]

    def per_step(self) -> tuple[Tensor, Tensor, Tensor]:
        """Means over rows at each timestep, every position counted."""
        return self.prob_change.mean(0), self.kl.mean(0), self.flips.mean(0)


def output_change(task: Task, reference: Tensor, other: Tensor) -> OutputChange:
    """Compare logits `[B, T, out]` of another run with a reference run, position by position."""
    if task.output_kind == "bits":
        p, q = torch.sigmoid(reference), torch.sigmoid(other)
        prob = (q - p).abs().mean(-1)
        kl = (p * (F.logsigmoid(reference) - F.logsigmoid(other))
              + (1 - p) * (F.logsigmoid(-reference) - F.logsigmoid(-other))).sum(-1)
        flips = ((reference > 0) != (other > 0)).float().mean(-1)
    else:
        lp, lq = reference.log_softmax(-1), other.log_softmax(-1)
        prob = 0.5 * (lq.exp() - lp.exp()).abs().sum(-1)
        kl = (lp.exp() * (lp - lq)).sum(-1)
        flips = (reference.argmax(-1) != other.argmax(-1)).float()
    return OutputChange(prob, kl.clamp(min=0), flips)


def per_step_mean(values: Tensor) -> Tensor:
    """`[B, T]` -> `[T]`, the mean over rows."""
    return values.float().mean(0)


def mean_loss_per_step(task: Task, logits: Tensor, batch: Batch) -> Tensor:
    """`[T]` mean over rows of each position's loss (zero where unscored)."""
    return task.loss_per_step(logits, batch).float().mean(0)
