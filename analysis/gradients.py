"""Gradient flow ("gradient dilution"): how much of the training signal reaches the memory
path compared with the bypass.

For one batch, the task loss (mean over scored positions) is differentiated with
respect to
  - the parameters of each component group the model declares (`component_groups()`:
    memory heads/projections, controller, output layer, ...): the L2 norm of the
    gradient of the group's parameters together, and its RMS per parameter;
  - the value of every read site and every bypass site at every timestep: the L2 norm
    over the batch and the site's elements at t.
The per-step memory signal is the root-sum-square over the read sites, the bypass signal
the same over the bypass sites, and `ratio_per_step` = memory / bypass. A ratio that
stays far below 1 through training is the signature of a model that learns to route
around its memory: the bypass gets the gradient, the memory path starves.

Those norms are a diagnostic only: they are not invariant to rescaling a path. Scaling a
DNC's write vector by k and the weights that read the reads by 1/k leaves every output
as it was but divides the reads' gradient by k. The evidence that fits the question is
gradient x activation per component (`attribution`): for each site of a component
(`SiteSpec.role`: memory, bypass, state), at each step, sum_b |sum_elements
dL/da * (a - mean_b a)|, the first-order change of the loss if the value were replaced
by its batch mean (the mean ablation the verdict uses). Rescaling a path by k scales a
by k and dL/da by 1/k, so the product does not move.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..models.sites import SiteModel, hooks
from ..models.tasks.base import Batch, Task
from .results import Result
from .runs import Progress, report, sub_progress
from .sites import bypass_sites, check_compatible, components, evaluating, model_device, read_sites, specs


@dataclass
class GroupGradient(Result):
    name: str
    prefixes: list[str]
    parameters: int  # number of scalar parameters
    grad_norm: float
    grad_rms: float  # grad_norm / sqrt(parameters)
    param_norm: float


@dataclass
class SiteGradient(Result):
    name: str
    kind: str
    per_step: Tensor  # [T] L2 norm of d loss / d value_t over batch and elements
    total: float  # L2 norm over all steps


@dataclass
class GradientResult(Result):
    loss: float
    groups: list[GroupGradient]
    sites: list[SiteGradient]
    memory_per_step: Tensor  # [T] root-sum-square over read sites (empty if none)
    bypass_per_step: Tensor  # [T] root-sum-square over bypass sites
    ratio_per_step: Tensor  # [T] memory / bypass (NaN where undefined)
    memory_total: float | None
    bypass_total: float | None
    ratio: float | None  # memory_total / bypass_total (a diagnostic: not invariant to rescaling a path)
    ungrouped: list[str] = field(default_factory=list)  # parameters no group claims
    attribution: dict[str, float] = field(default_factory=dict)  # component -> gradient x activation, summed over steps
    attribution_per_step: dict[str, Tensor] = field(default_factory=dict)  # component -> [T]
    attribution_share: float | None = None  # memory / (memory + bypass), None without a bypass

    def group(self, name: str) -> GroupGradient:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no component group {name!r}; have {[g.name for g in self.groups]}")


def _belongs(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix.rstrip(".") + ".")


def gradient_flow(model: SiteModel, task: Task, batch: Batch, *, progress: Progress | None = None) -> GradientResult:
    """Gradient norms per component group and per read/bypass site and timestep."""
    check_compatible(model, task)
    report(progress, 0.0)
    T = batch.mask.shape[1]
    reads, bypass = read_sites(model), bypass_sites(model)
    comp = components(model)
    names = reads + bypass + [n for n in comp["state"] if n not in reads + bypass]
    all_specs = specs(model)
    params = dict(model.named_parameters())
    groups = model.component_groups()
    flags = {n: p.requires_grad for n, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(True)
        with evaluating(model), torch.enable_grad():
            with hooks(model, names, keep_grad=True) as trace:
                logits = model(batch.inputs.to(model_device(model)))
            loss = task.loss(logits, batch.to(logits.device))
            parts = {n: [p for p in trace.parts(n)] for n in names if n in trace}
            flat_parts = [(n, i, p) for n, ps in parts.items() for i, p in enumerate(ps) if p.requires_grad]
            param_list = list(params.items())
            inputs = [p for _, p in param_list] + [p for _, _, p in flat_parts]
            grads = torch.autograd.grad(loss, inputs, allow_unused=True) if inputs else []
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    report(progress, 0.8)

    pgrads = {n: g for (n, _), g in zip(param_list, grads[:len(param_list)])}
    sgrads: dict[str, list[Tensor | None]] = {n: [None] * len(ps) for n, ps in parts.items()}
    for (n, i, _), g in zip(flat_parts, grads[len(param_list):]):
        sgrads[n][i] = g

    group_results = []
    claimed: set[str] = set()
    for gname, prefixes in groups.items():
        members = [n for n in params if any(_belongs(n, p) for p in prefixes)]
        claimed.update(members)
        sq = sum(float(pgrads[n].detach().float().pow(2).sum()) for n in members if pgrads[n] is not None)
        count = sum(params[n].numel() for n in members)
        pnorm = sum(float(params[n].detach().float().pow(2).sum()) for n in members) ** 0.5
        group_results.append(GroupGradient(gname, list(prefixes), count, sq ** 0.5,
                                           (sq / count) ** 0.5 if count else 0.0, pnorm))

    attribution_t: dict[str, Tensor] = {}
    for role, role_sites in comp.items():
        per_role = [_attribution(parts.get(n, []), sgrads.get(n, []), len(all_specs[n].shape), T)
                    for n in role_sites if n in parts]
        if per_role:
            attribution_t[role] = torch.stack(per_role).sum(0)
    attribution = {role: float(v.sum()) for role, v in attribution_t.items()}
    share = None
    if "memory" in attribution and "bypass" in attribution:
        total = attribution["memory"] + attribution["bypass"]
        share = attribution["memory"] / total if total > 0 else None

    site_results = []
    for n in [n for n in names if n in reads + bypass]:
        per_step = torch.zeros(T)
        for i, (part, g) in enumerate(zip(parts.get(n, []), sgrads.get(n, []))):
            if g is None:
                continue
            if part.dim() == len(all_specs[n].shape) + 2:  # a sequence site: one [B, T, *shape] part
                per_step = g.detach().float().cpu().transpose(0, 1).reshape(T, -1).norm(dim=1)
            else:  # a step-wise site: one [B, *shape] part per step, in time order
                per_step[i] = float(g.detach().float().norm())
        site_results.append(SiteGradient(n, all_specs[n].kind, per_step, float(per_step.norm())))

    def rss(kind_sites: list[str]) -> Tensor:
        rows = [s.per_step for s in site_results if s.name in kind_sites]
        return torch.stack(rows).pow(2).sum(0).sqrt() if rows else torch.zeros(0)

    mem, byp = rss(reads), rss(bypass)
    if len(mem) and len(byp):
        ratio_t = torch.where(byp > 0, mem / byp.clamp(min=1e-30), torch.tensor(float("nan")))
    else:
        ratio_t = torch.zeros(0)
    mem_total = float(mem.norm()) if len(mem) else None
    byp_total = float(byp.norm()) if len(byp) else None
    ratio = mem_total / byp_total if mem_total is not None and byp_total else None
    report(progress, 1.0)
    return GradientResult(loss=float(loss.detach()), groups=group_results, sites=site_results,
                          memory_per_step=mem, bypass_per_step=byp, ratio_per_step=ratio_t,
                          memory_total=mem_total, bypass_total=byp_total, ratio=ratio,
                          ungrouped=sorted(set(params) - claimed), attribution=attribution,
                          attribution_per_step=attribution_t, attribution_share=share)


def _attribution(parts: list[Tensor], grads: list[Tensor | None], rank: int, T: int) -> Tensor:
    """`[T]` sum over rows of |sum over elements of dL/da * (a - batch mean of a)|."""
    out = torch.zeros(T)
    if len(parts) == 1 and parts[0].dim() == rank + 2:  # a sequence site: one [B, T, *shape] part
        a, g = parts[0].detach().float().cpu(), grads[0]
        if g is None:
            return out
        contrib = (g.detach().float().cpu() * (a - a.mean(0, keepdim=True))).reshape(a.shape[0], a.shape[1], -1)
        return contrib.sum(-1).abs().sum(0)
    for t, (a, g) in enumerate(zip(parts, grads)):  # a step-wise site: one [B, *shape] part per step
        if g is None:
            continue
        a = a.detach().float().cpu()
        contrib = (g.detach().float().cpu() * (a - a.mean(0, keepdim=True))).reshape(a.shape[0], -1)
        out[t] = contrib.sum(-1).abs().sum()
    return out


@dataclass
class GradientSeriesPoint(Result):
    path: str
    step: int
    result: GradientResult


def gradient_flow_series(checkpoint_paths: Sequence[str | Path], task: Task | None = None, *, samples: int = 16,
                         seed: int = 0, progress: Progress | None = None) -> list[GradientSeriesPoint]:
    """`gradient_flow` for each checkpoint of a training series on one fixed batch
    (`task.sample(samples, seed)`), ordered by training step. The task defaults to the
    one stored in the first checkpoint."""
    from ..models.checkpoints import load_checkpoint
    from ..models.tasks import make_task

    paths = [Path(p) for p in checkpoint_paths]
    if not paths:
        raise ValueError("gradient_flow_series needs at least one checkpoint")
    points = []
    batch = None
    for k, path in enumerate(paths):
        ckpt = load_checkpoint(path)
        if task is None:
            if not ckpt.meta.task:
                raise ValueError(f"{path} stores no task; pass one")
            task = make_task(ckpt.meta.task)
        if batch is None:
            batch = task.sample(samples, seed)
        result = gradient_flow(ckpt.model, task, batch)
        points.append(GradientSeriesPoint(str(path), int(ckpt.meta.step), result))
        report(sub_progress(progress, 0, 1), (k + 1) / len(paths))
    points.sort(key=lambda p: p.step)
    return points
