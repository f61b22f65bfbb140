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
    values), averaged over the batch and any leading axes (heads, layers' channels).
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
    return StateUsage(name, list(spec.shape), norm, erank, max_rank, float(norm.mean()),
                      float(torch.nanmean(erank)) if erank is not None else None)


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
    state_sites = sites_of_kind(model, "state", on_request=True)
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
