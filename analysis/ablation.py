"""Ablations: replace sites' values and measure what the task metric, the loss and the
outputs themselves lose, against the clean run.

Modes:
  zero      the value becomes 0.
  mean      the value at a position becomes the mean over a reference batch of the values
            at the positions that play the same part (see "Alignment"); without
            `reference`, the mean over the other sequences of the batch (leaving a row's own
            value out, so that a small batch's mean does not hand a row back 1/B of itself).
  resample  the value comes from a different input's clean run: row i gets row d(i)'s
            value, d a seeded derangement of the batch (no row keeps its own), or rows of
            `reference` when given. It removes the information a site carries about this
            input while keeping its values in their usual range (Chan et al. 2022,
            causal scrubbing; "resample ablation").

Alignment. A task may label its positions by role (`task.position_roles(batch)` `[B, T]`:
MQAR's k-th query, copy's output row k in sequences of different lengths); values are then
swapped and averaged only between positions of the same role: row i's k-th query gets
its donor's k-th query, never a filler. When the donor has no position of that role (a
shorter sequence), the next row in the donor cycle that has one stands in; without roles
(or failing all rows) positions align by timestep.

A spec can be limited to timesteps (`steps`) and to elements of the site
(`elements={"slot": [3, 4]}`, `{"head": [0]}`). Many specs run as blocks of rows of one
batch: the batch is tiled once per spec and each spec's interventions touch only its
block, so K ablations cost one forward pass of K*B rows (chunked to a memory budget).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import Tensor

from ..models.sites import Intervention, SiteModel
from ..models.tasks.base import Batch, ClassesTask, Task
from .results import Result
from .runs import (Progress, forward, mean_loss_per_step, output_change, report, rows_per_chunk, sub_progress,
                   tile)
from .sites import check_compatible, check_sites, element_mask, evaluating
from .sites import specs as site_specs

Mode = Literal["zero", "mean", "resample"]
MODES: tuple[str, ...] = ("zero", "mean", "resample")


@dataclass
class AblationSpec:
    sites: list[str]
    mode: Mode
    steps: list[int] | None = None
    elements: dict[str, list[int]] | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sites, str):
            self.sites = [self.sites]
        self.sites = list(self.sites)
        if not self.sites:
            raise ValueError("an ablation needs at least one site")
        if self.mode not in MODES:
            raise ValueError(f"unknown ablation mode {self.mode!r}; choose one of {MODES}")
        if self.steps is not None:
            self.steps = [int(s) for s in self.steps]
        if self.elements is not None:
            self.elements = {str(k): [int(i) for i in v] for k, v in self.elements.items()}

    def describe(self) -> str:
        if self.label:
            return self.label
        text = f"{self.mode} {', '.join(self.sites)}"
        if self.steps is not None:
            text += f" at t={_ranges(self.steps)}"
        if self.elements:
            text += " (" + ", ".join(f"{k} {_ranges(v)}" for k, v in self.elements.items()) + ")"
        return text

    def to_dict(self) -> dict:
        return {"sites": self.sites, "mode": self.mode, "steps": self.steps, "elements": self.elements,
                "label": self.describe()}


def _ranges(idx: Sequence[int]) -> str:
    idx = sorted(set(idx))
    out, i = [], 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(out)


@dataclass
class AblationResult(Result):
    spec: AblationSpec
    label: str
    metric_name: str
    higher_is_better: bool
    metric: float  # mean over sequences, ablated
    metric_clean: float
    metric_delta: float  # ablated - clean
    loss: float
    loss_clean: float
    loss_delta: float
    metric_per_step: Tensor  # [T], means over rows (they add up to `metric`)
    metric_clean_per_step: Tensor
    loss_per_step: Tensor
    loss_clean_per_step: Tensor
    metric_per_sequence: Tensor  # [B]
    metric_clean_per_sequence: Tensor
    prob_change: float  # over scored positions, see runs.output_change
    kl: float
    flip_rate: float
    prob_change_per_step: Tensor  # [T], every position
    kl_per_step: Tensor
    flip_rate_per_step: Tensor
    # the same per step over scored positions only (NaN where no row is scored at t), so a
    # per-step figure reads on the metric's own scale: accuracy per step of 0.62 where the
    # means over every position above would read 0.08 (see `position_scores`)
    scored_per_step: Tensor = None  # type: ignore[assignment]  # [T] rows scored at t
    metric_scored_per_step: Tensor = None  # type: ignore[assignment]
    metric_clean_scored_per_step: Tensor = None  # type: ignore[assignment]
    prob_change_scored_per_step: Tensor = None  # type: ignore[assignment]
    kl_scored_per_step: Tensor = None  # type: ignore[assignment]
    flip_rate_scored_per_step: Tensor = None  # type: ignore[assignment]
    logits: Tensor = field(repr=False, default=None)  # type: ignore[assignment]

    _omit = ("logits",)


def run_ablations(model: SiteModel, task: Task, batch: Batch, specs: Sequence[AblationSpec], *,
                  seed: int = 0, reference: Batch | None = None, memory_budget_mb: float = 512,
                  progress: Progress | None = None) -> list[AblationResult]:
    """Run every ablation spec on `batch`; results in the order of the specs."""
    check_compatible(model, task)
    specs_ = [s if isinstance(s, AblationSpec) else AblationSpec(**s) for s in specs]
    if not specs_:
        return []
    B, T = batch.mask.shape
    all_specs = site_specs(model)
    resolved = [check_sites(model, s.sites) for s in specs_]
    for spec in specs_:
        bad = [t for t in spec.steps or [] if not 0 <= t < T]
        if bad:
            raise ValueError(f"ablation {spec.describe()!r}: steps {bad} outside the sequence (0..{T - 1})")
    masks = [{n: element_mask(all_specs[n], spec.elements) for n in names} for spec, names in zip(specs_, resolved)]
    needs = {mode: sorted({n for spec, names in zip(specs_, resolved) if spec.mode == mode for n in names})
             for mode in ("mean", "resample")}

    report(progress, 0.0)
    with evaluating(model):
        own = set(needs["resample"]) | (set(needs["mean"]) if reference is None else set())
        clean_logits, clean_vals = forward(model, batch.inputs, sorted(own))
        sources = _sources(model, task, batch, clean_vals, needs, reference, seed)
        report(progress, 0.1)

        per_chunk = rows_per_chunk(all_specs, T, B, memory_budget_mb)
        results: list[AblationResult] = []
        clean = _Scored(task, clean_logits, batch)
        order = list(range(len(specs_)))
        chunks = [order[i:i + per_chunk] for i in range(0, len(order), per_chunk)]
        for c, chunk in enumerate(chunks):
            plan: dict[str, list] = {}
            for j, k in enumerate(chunk):
                spec = specs_[k]
                for n in resolved[k]:
                    src = None if spec.mode == "zero" else sources[spec.mode][n]
                    steps = None if spec.steps is None else set(spec.steps)
                    plan.setdefault(n, []).append((j * B, (j + 1) * B, spec.mode, steps, masks[k][n], src))
            ivs = [Intervention(n, _replacer(entries)) for n, entries in plan.items()]
            logits, _ = forward(model, tile(batch.inputs, len(chunk)), (), ivs)
            for j, k in enumerate(chunk):
                results.append(_result(task, specs_[k], batch, clean, logits[j * B:(j + 1) * B]))
            report(sub_progress(progress, 0.1, 1.0), (c + 1) / len(chunks))
    return results


def _sources(model: SiteModel, task: Task, batch: Batch, clean_vals: dict[str, Tensor], needs: dict[str, list[str]],
             reference: Batch | None, seed: int) -> dict[str, dict[str, Tensor]]:
    """Replacement values `[B, T, *shape]`: role-aligned means and donor values."""
    B, T = batch.mask.shape
    ref_vals = clean_vals
    if reference is not None and (needs["mean"] or needs["resample"]):
        if reference.mask.shape[1] != T:
            raise ValueError(f"the reference batch has {reference.mask.shape[1]} steps, the batch {T}: "
                             "mean and resample ablation replace values step by step, so they must match")
        _, ref_vals = forward(model, reference.inputs, sorted(set(needs["mean"]) | set(needs["resample"])))
    g = torch.Generator().manual_seed(int(seed))
    if reference is None:
        if needs["resample"] and B < 2:
            raise ValueError("resample ablation takes values from other sequences: give a batch of at least "
                             "2 sequences, or a reference batch")
        donor = derangement(B, g) if B >= 2 else torch.zeros(1, dtype=torch.long)
    else:
        R = reference.mask.shape[0]
        donor = torch.randperm(R, generator=g).repeat(B // R + 1)[:B]
    keys = position_keys(task, batch)
    ref_keys = keys if reference is None else position_keys(task, reference)
    rows, steps = aligned_donors(keys, ref_keys, donor, exclude_self=reference is None)
    return {
        "mean": {n: aligned_mean(ref_vals[n], keys, ref_keys, leave_out_own=reference is None)
                 for n in needs["mean"]},
        "resample": {n: ref_vals[n][rows, steps] for n in needs["resample"]},
    }


def position_keys(task: Task, batch: Batch) -> Tensor:
    """`[B, T]` role ids of the positions (`task.position_roles`), or the timestep itself."""
    roles = getattr(task, "position_roles", None)
    if roles is None:
        B, T = batch.mask.shape
        return torch.arange(T).expand(B, T)
    return roles(batch).long()


def _compact(keys: Tensor, ref_keys: Tensor) -> tuple[Tensor, Tensor, int]:
    """Both key tensors renumbered 0..U-1 consistently."""
    uniq, inv = torch.unique(torch.cat([keys.reshape(-1), ref_keys.reshape(-1)]), return_inverse=True)
    n = keys.numel()
    return inv[:n].view(keys.shape), inv[n:].view(ref_keys.shape), len(uniq)


def aligned_donors(keys: Tensor, ref_keys: Tensor, donor: Tensor, exclude_self: bool) -> tuple[Tensor, Tensor]:
    """For every position (i, t): the reference row and step whose value stands in for it.
    The row is donor[i] when it has a position with the same key, else the next row in
    the cycle donor[i]+1, donor[i]+2, ... that has one (never i itself with
    `exclude_self`); the step is that row's position with the key. Positions no row can
    match take donor[i]'s value at the same timestep."""
    B, T = keys.shape
    R, Tr = ref_keys.shape
    kb, kr, U = _compact(keys, ref_keys)
    where = torch.full((R, U), -1, dtype=torch.long)
    where.scatter_(1, kr, torch.arange(Tr).expand(R, Tr))  # keys are unique within a row
    rows = torch.full((B, T), -1, dtype=torch.long)
    steps = torch.full((B, T), -1, dtype=torch.long)
    own = torch.arange(B)
    for c in range(R):
        cand = (donor + c) % R  # [B]
        pos = where[cand[:, None], kb]  # [B, T]
        take = (rows < 0) & (pos >= 0)
        if exclude_self:
            take &= (cand != own)[:, None]
        rows = torch.where(take, cand[:, None], rows)
        steps = torch.where(take, pos, steps)
        if bool((rows >= 0).all()):
            break
    unmatched = rows < 0
    rows = torch.where(unmatched, donor[:, None].expand(B, T), rows)
    steps = torch.where(unmatched, torch.arange(T).clamp(max=Tr - 1).expand(B, T), steps)
    return rows, steps


def aligned_mean(values: Tensor, keys: Tensor, ref_keys: Tensor, leave_out_own: bool = False) -> Tensor:
    """`[B, T, *shape]`: at each position, the mean of the reference values `[R, Tr, *shape]`
    at the positions with the same key (the timestep's mean where no position has it).
    leave_out_own: the reference is the batch itself; each position's own value is left
    out of its mean (kept only where it is the only one with its key)."""
    B, T = keys.shape
    R, Tr = ref_keys.shape
    kb, kr, U = _compact(keys, ref_keys)
    flat = values.reshape(R * Tr, *values.shape[2:]).double()
    sums = torch.zeros(U, *values.shape[2:], dtype=torch.double).index_add_(0, kr.reshape(-1), flat)
    counts = torch.bincount(kr.reshape(-1), minlength=U)
    shape = (U,) + (1,) * (values.dim() - 2)
    means = (sums / counts.clamp(min=1).view(shape)).to(values.dtype)
    out = means[kb]  # [B, T, *shape]
    if leave_out_own:
        others = (counts[kb] - 1).view(B, T, *([1] * (values.dim() - 2)))
        loo = ((sums[kb] - values.double()) / others.clamp(min=1)).to(values.dtype)
        out = torch.where(others > 0, loo, out)
    missing = counts[kb] == 0
    if bool(missing.any()):
        by_step = values.mean(0)[torch.arange(T).clamp(max=Tr - 1)]  # [T, *shape]
        out = torch.where(missing.view(B, T, *([1] * (values.dim() - 2))), by_step.unsqueeze(0), out)
    return out


def derangement(n: int, g: torch.Generator) -> Tensor:
    """A random permutation with no fixed point: a random cycle through all n rows."""
    order = torch.randperm(n, generator=g)
    donor = torch.empty(n, dtype=torch.long)
    donor[order] = order.roll(-1)
    return donor


def fit(src: Tensor, like: Tensor) -> Tensor:
    """Crop a padded recorded value to the shape of the live one (attention over the keys
    seen so far grows with t; the trace pads it to the longest)."""
    k = like.dim() - 1
    lead = src.dim() - k
    if k == 0 or tuple(src.shape[lead:]) == tuple(like.shape[1:]):
        return src
    return src[(slice(None),) * lead + tuple(slice(0, n) for n in like.shape[1:])]


def _replacer(entries: list):
    """One site's interventions for every block of a chunk, as a function of (value_t, t)."""

    def replace(value: Tensor, t: int) -> Tensor:
        out = None
        for r0, r1, mode, steps, mask, src in entries:
            if steps is not None and t not in steps:
                continue
            if out is None:
                out = value.clone()
            block = out[r0:r1]
            if mode == "zero":
                new = torch.zeros_like(block)
            else:  # mean and resample: one replacement per row, aligned by role
                new = fit(src[:, t], block).to(block)
            if mask is not None:
                new = torch.where(mask.to(block.device), new, block)
            out[r0:r1] = new
        return value if out is None else out

    return replace


def position_scores(task: Task, logits: Tensor, batch: Batch) -> Tensor:
    """`[B, T]` each position's own score on the metric's scale: 1/0 right for accuracy
    (whose per-step share is 1/#scored of the row), the wrong bits for wrong bits. Only
    the scored positions (`batch.mask`) mean anything."""
    per_step = task.metric_per_step(logits, batch).float()
    if isinstance(task, ClassesTask):
        per_step = per_step * batch.mask.sum(1, keepdim=True).clamp(min=1)
    return per_step


def scored_mean_per_step(values: Tensor, mask: Tensor) -> Tensor:
    """`[B, T]` -> `[T]`: the mean over the rows scored at t (NaN where none is)."""
    m = mask.float()
    n = m.sum(0)
    return torch.where(n > 0, (values.float() * m).sum(0) / n.clamp(min=1), torch.full_like(n, float("nan")))


class _Scored:
    """A run's scores, computed once."""

    def __init__(self, task: Task, logits: Tensor, batch: Batch):
        self.logits = logits
        self.per_seq = task.metric(logits, batch).float()
        self.metric = float(self.per_seq.mean())
        self.loss = float(task.loss(logits, batch))
        self.metric_per_step = task.metric_per_step(logits, batch).float().mean(0)
        self.loss_per_step = mean_loss_per_step(task, logits, batch)
        self.metric_scored_per_step = scored_mean_per_step(position_scores(task, logits, batch), batch.mask)


def _result(task: Task, spec: AblationSpec, batch: Batch, clean: _Scored, logits: Tensor) -> AblationResult:
    ab = _Scored(task, logits, batch)
    change = output_change(task, clean.logits, logits)
    prob, kl, flips = change.mean_over(batch.mask)
    prob_t, kl_t, flips_t = change.per_step()
    return AblationResult(
        spec=spec,
        label=spec.describe(),
        metric_name=task.metric_name or "metric",
        higher_is_better=task.higher_is_better,
        metric=ab.metric,
        metric_clean=clean.metric,
        metric_delta=ab.metric - clean.metric,
        loss=ab.loss,
        loss_clean=clean.loss,
        loss_delta=ab.loss - clean.loss,
        metric_per_step=ab.metric_per_step,
        metric_clean_per_step=clean.metric_per_step,
        loss_per_step=ab.loss_per_step,
        loss_clean_per_step=clean.loss_per_step,
        metric_per_sequence=ab.per_seq,
        metric_clean_per_sequence=clean.per_seq,
        prob_change=prob,
        kl=kl,
        flip_rate=flips,
        prob_change_per_step=prob_t,
        kl_per_step=kl_t,
        flip_rate_per_step=flips_t,
        scored_per_step=batch.mask.sum(0),
        metric_scored_per_step=ab.metric_scored_per_step,
        metric_clean_scored_per_step=clean.metric_scored_per_step,
        prob_change_scored_per_step=scored_mean_per_step(change.prob_change, batch.mask),
        kl_scored_per_step=scored_mean_per_step(change.kl, batch.mask),
        flip_rate_scored_per_step=scored_mean_per_step(change.flips, batch.mask),
        logits=logits,
    )
