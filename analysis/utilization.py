"""Utilization: which slots the memory uses, how full and how diverse its state is, and
how much successive writes overlap.

Slot memories (read/write weightings, kinds read_weights/write_weights with
`distribution=True`, slots on the last axis):
  - mass per slot per step: the weights summed over heads, averaged over the batch;
  - the share of all mass each slot gets over the whole run, and the effective number
    of slots exp(H(share)) (= N for even use, 1 for a single slot), also per step;
  - untouched slots: slots whose weight never reaches their uniform share 1/N in any
    row, step or head. A sharp head touches few slots; a diffuse blur touches all,
    evenly, which the effective number shows.
State memories (kind state, on-request ones included: memory matrices, linear-attention
and SSM states, cell states):
  - the Frobenius norm per step (mean over the batch);
  - for states with two or more axes, the effective rank of the matrix formed by the
    last two axes (Roy & Vetterli 2007: exp of the entropy of the normalised singular
    values), averaged over the batch and any leading axes (heads, layers' channels);
  - distinct slots (a slot memory, axes slot x feature) or distinct heads (a state with
    a head axis): sum_i 1 / #{j : |x_i - x_j| <= COLLAPSE_TOL * mean |x|}, the number of
    rows once equal ones are merged (N for all different, 1 when every slot holds the
    same row), mean over the batch, its largest value over the steps reported. Weight
    mass alone cannot see a collapsed memory: uniform addressing over 16 identical slots
    spreads over "16 effective slots" that hold one vector between them.
Writes (kind write: erase/add vectors, written keys and values):
  - interference: mean |cos| between what is written at t and at t-1 (per head, along
    the last axis). Near 1: successive writes pile onto the same direction and
    overwrite each other; near 0: they are orthogonal and can be told apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.sites import SiteModel
from ..models.tasks.base import Batch, Task
from .results import Result
from .runs import Progress, forward, report
from .sites import check_compatible, evaluating, sites_of_kind, slot_weight_sites, specs

COLLAPSE_TOL = 1e-3  # rows closer than this, relative to the mean row norm, are the same row
COLLAPSED = 1.5  # at most this many distinct slots (or heads) at every step: the memory has collapsed


@dataclass
class SlotUsage(Result):
    name: str
    kind: str  # read_weights | write_weights
    slots: int
    mass_per_step: Tensor  # [T, N]
    share: Tensor  # [N] share of all mass over the run
    effective_slots: float  # exp(H(share))
    effective_slots_per_step: Tensor  # [T]
    untouched: list[int]  # slots never reaching 1/N
    touched_fraction: float


@dataclass
class StateUsage(Result):
    name: str
    shape: list[int | None]
    norm_per_step: Tensor  # [T]
    effective_rank_per_step: Tensor | None  # [T], None for one-axis states
    max_rank: int | None  # min of the last two axes
    mean_norm: float
    mean_effective_rank: float | None
    distinct_axis: str | None = None  # "slot" or "head": the axis whose rows are compared
    distinct_of: int | None = None  # its size
    distinct_per_step: Tensor | None = None  # [T] effective distinct rows, mean over the batch
    distinct: float | None = None  # the largest over the steps
    collapsed: bool = False  # distinct <= COLLAPSED with 2 or more rows


@dataclass
class WriteInterference(Result):
    name: str
    per_step: Tensor  # [T], NaN at t = 0
    mean: float


@dataclass
class UtilizationResult(Result):
    slots: list[SlotUsage]
    states: list[StateUsage]
    interference: list[WriteInterference]


def _entropy(p: Tensor) -> Tensor:
    q = p / p.sum(-1, keepdim=True).clamp(min=1e-30)
    return -(q * torch.where(q > 0, q.log(), torch.zeros_like(q))).sum(-1)


def slot_usage(name: str, kind: str, w: Tensor) -> SlotUsage:
    """w `[B, T, *lead, N]` weightings over N slots."""
    B, T, N = w.shape[0], w.shape[1], w.shape[-1]
    w = w.float().clamp(min=0).reshape(B, T, -1, N)
    per_step = w.sum(2).mean(0)  # [T, N]
    total = per_step.sum(0)
    share = total / total.sum().clamp(min=1e-30)
    eff = float(_entropy(share).exp()) if total.sum() > 0 else 0.0
    eff_t = torch.where(per_step.sum(-1) > 0, _entropy(per_step).exp(), torch.zeros(T))
    touched = w.amax(dim=(0, 1, 2)) >= 1.0 / N
    return SlotUsage(name, kind, N, per_step, share, eff, eff_t,
                     [int(i) for i in torch.nonzero(~touched).flatten()], float(touched.float().mean()))


def effective_rank(m: Tensor) -> Tensor:
    """exp(entropy of the normalised singular values) of each matrix `[..., r, c]`;
    NaN for an all-zero matrix."""
    s = torch.linalg.svdvals(m.double())
    total = s.sum(-1)
    r = _entropy(s).exp()
    return torch.where(total > 1e-12, r, torch.tensor(float("nan"), dtype=r.dtype)).float()


def distinct_rows(x: Tensor) -> Tensor:
    """`[..., n, d]` -> `[...]`: the effective number of distinct rows (see the module doc)."""
    x = x.double()
    d = torch.cdist(x, x)
    scale = x.norm(dim=-1).mean(-1).clamp(min=1e-12)[..., None, None]
    same = (d <= COLLAPSE_TOL * scale).double().sum(-1)  # [..., n], at least 1 (the row itself)
    return (1.0 / same).sum(-1).float()


def distinct_axis(spec) -> str | None:
    """Which rows of a state can collapse onto each other: a slot memory's slots, or the
    heads of a multi-head state; None for other states."""
    if tuple(spec.axes[-2:]) == ("slot", "feature"):
        return "slot"
    if spec.axes and spec.axes[0] == "head" and (spec.shape[0] or 0) > 1:
        return "head"
    return None


def state_usage(name: str, spec, v: Tensor) -> StateUsage:
    """v `[B, T, *shape]`."""
    B, T = v.shape[:2]
    v = v.float()
    norm = v.reshape(B, T, -1).norm(dim=-1).mean(0)
    erank, max_rank = None, None
    if v.dim() >= 4:
        r, c = v.shape[-2:]
        erank = torch.nanmean(effective_rank(v.reshape(B, T, -1, r, c)).reshape(B, T, -1).transpose(1, 2)
                              .reshape(-1, T), dim=0)
        max_rank = int(min(r, c))
    usage = StateUsage(name, list(spec.shape), norm, erank, max_rank, float(norm.mean()),
                       float(torch.nanmean(erank)) if erank is not None else None)
    axis = distinct_axis(spec)
    if axis is not None:
        n = int(v.shape[2 + spec.axes.index(axis)])
        rows = v.movedim(2 + spec.axes.index(axis), 2).reshape(B, T, n, -1)
        per_step = distinct_rows(rows).mean(0)  # [T]
        usage.distinct_axis, usage.distinct_of, usage.distinct_per_step = axis, n, per_step
        usage.distinct = float(per_step.max())
        usage.collapsed = n >= 2 and usage.distinct <= COLLAPSED
    return usage


def memory_state_sites(model: SiteModel) -> list[str]:
    """The memory's state sites (on-request ones included), not a controller's own state."""
    return [n for n in sites_of_kind(model, "state", on_request=True) if specs(model)[n].memory]


def collapse_check(model: SiteModel, batch: Batch) -> list[StateUsage]:
    """Distinct slots or heads of every memory state that can collapse, from one run."""
    all_specs = specs(model)
    names = [n for n in memory_state_sites(model) if distinct_axis(all_specs[n]) is not None]
    if not names:
        return []
    with evaluating(model):
        _, vals = forward(model, batch.inputs, names)
    return [state_usage(n, all_specs[n], vals[n]) for n in names]


def write_interference(name: str, v: Tensor) -> WriteInterference:
    """Mean |cos| of successive writes; v `[B, T, *shape]`, compared along the last axis."""
    v = v.float()
    T = v.shape[1]
    per_step = torch.full((T,), float("nan"))
    if T > 1:
        a, b = v[:, 1:], v[:, :-1]
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-12)
        valid = (a.norm(dim=-1) > 1e-12) & (b.norm(dim=-1) > 1e-12)
        cos = torch.where(valid, cos.abs(), torch.tensor(float("nan")))
        per_step[1:] = torch.nanmean(cos.reshape(cos.shape[0], T - 1, -1).transpose(1, 2).reshape(-1, T - 1), dim=0)
    finite = ~torch.isnan(per_step)
    return WriteInterference(name, per_step, float(per_step[finite].mean()) if finite.any() else float("nan"))


def utilization(model: SiteModel, task: Task, batch: Batch, *, progress: Progress | None = None) -> UtilizationResult:
    """Slot usage, state norms and effective rank, and write interference, from one run."""
    check_compatible(model, task)
    all_specs = specs(model)
    slot_sites = slot_weight_sites(model)
    state_sites = memory_state_sites(model)
    write_sites = sites_of_kind(model, "write")
    report(progress, 0.0)
    with evaluating(model):
        _, vals = forward(model, batch.inputs, slot_sites + state_sites + write_sites)
    report(progress, 0.6)
    slots = [slot_usage(n, all_specs[n].kind, vals[n]) for n in slot_sites]
    states = [state_usage(n, all_specs[n], vals[n]) for n in state_sites]
    writes = [write_interference(n, vals[n]) for n in write_sites]
    report(progress, 1.0)
    return UtilizationResult(slots, states, writes)
