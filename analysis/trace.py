"""Trace: one clean run of a model on a task batch, scored per timestep, with any sites.

Per-timestep arrays are means over the batch rows of each position's contribution, so
they add up over time: `sum(metric_per_step) == metric` (wrong bits per sequence, or
accuracy, whose per-position share is 1/#scored positions) and `loss_per_step` is the
mean over rows of the task loss at that position (zero where nothing is scored;
`scored[t]` says where something is).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from torch import Tensor

from ..models.sites import SiteModel
from ..models.tasks.base import Batch, Task
from .results import Result
from .runs import Progress, forward, mean_loss_per_step, report
from .sites import check_compatible, check_sites, evaluating, specs


@dataclass
class SiteRecord(Result):
    """One recorded site: `values` is `[batch, time, *shape]`, labelled by `axes`."""

    name: str
    kind: str
    axes: list[str]
    distribution: bool
    values: Tensor


@dataclass
class TraceResult(Result):
    metric_name: str
    higher_is_better: bool
    chance: float
    metric: float  # mean over sequences
    loss: float  # task loss, mean over scored positions
    metric_per_sequence: Tensor  # [B]
    metric_per_step: Tensor  # [T]
    loss_per_step: Tensor  # [T]
    scored: Tensor  # [T] bool: some row is scored at t
    logits: Tensor  # [B, T, out]
    probs: Tensor  # [B, T, out]
    targets: Tensor
    mask: Tensor  # [B, T]
    sites: dict[str, SiteRecord] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.logits.shape[1])


def run_trace(model: SiteModel, task: Task, batch: Batch, sites: Sequence[str] = (),
              *, progress: Progress | None = None) -> TraceResult:
    """Run the model on the batch (eval mode, no grad), score it and record `sites`
    (exact names, on-request ones included, or globs such as "memory.*" / "*")."""
    check_compatible(model, task)
    names = check_sites(model, sites)
    report(progress, 0.0)
    with evaluating(model):
        logits, recorded = forward(model, batch.inputs, names)
    all_specs = specs(model)
    per_seq = task.metric(logits, batch).float()
    result = TraceResult(
        metric_name=task.metric_name or "metric",
        higher_is_better=task.higher_is_better,
        chance=float(task.chance(batch)),
        metric=float(per_seq.mean()),
        loss=float(task.loss(logits, batch)),
        metric_per_sequence=per_seq,
        metric_per_step=task.metric_per_step(logits, batch).float().mean(0),
        loss_per_step=mean_loss_per_step(task, logits, batch),
        scored=batch.mask.any(0),
        logits=logits,
        probs=task.probs(logits),
        targets=batch.targets,
        mask=batch.mask,
        sites={
            n: SiteRecord(n, all_specs[n].kind, ["batch", "time", *all_specs[n].axes],
                          all_specs[n].distribution, recorded[n])
            for n in names
        },
    )
    report(progress, 1.0)
    return result
