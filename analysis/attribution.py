"""Attribution patching: a first-order estimate of every activation patch at once.

Exact patching (`patching.py`) runs the model once per (site, timestep[, element]) cell.
Attribution patching (AtP, Nanda 2023; Syed et al. 2023) estimates all of them from one
run of the source input (clean when denoising), one run of the base input with gradients,
and one backward pass: patching site x at step t moves the score S by about

    S(x_t <- x_t^src) - S_base  ~=  dS/dx_t . (x_t^src - x_t^base)

summed over the pair rows and over the cell's elements (the whole step, or one slot /
head along `per_element`). The gradient is taken through a zero "probe" added to every
swept site by an intervention, so it is the total derivative of the score with respect
to the site's value at t -- including every path through later sites, exactly what a
patch at t perturbs -- whether or not the model's weights require gradients. The result
has `PatchingResult`'s layout (`scores`, `patched`, the same summary), so whatever shows
an exact sweep shows an estimate; `label` says which it is.

Where a first-order estimate goes wrong, and what is done about it (after AtP* of
Kramar et al. 2024):
  - Saturated softmax. AtP* recomputes the attention softmax for query/key patches
    instead of linearising through it. mnemoscope's sites do not expose pre-softmax
    logits, so the generic form is this: cells on distribution sites (`SiteSpec.distribution`:
    read/write weightings, attention patterns; in the NTM and DNC they feed the next
    step's interpolation, shift and sharpening, a renormalised power of the weights) are
    computed exactly, as batched rows, and every other cell stays first-order
    (`exact_distributions=True`, the default; their count is `exact_cells`).
  - Cancellation. A cell whose effect runs along paths of opposite sign gets a small
    estimate however large each path is. GradDrop's check: the backward pass is repeated
    (as extra row blocks of the same batched pass) with the gradient through one route
    blocked at a time -- a layer's sites for stacked models, else one site -- and
    `cancellation` holds, per cell, the largest change of the estimate (in recovery
    units) that blocking one route causes. A cell is `flagged` when that change exceeds
    the estimate itself by more than 0.05: the paths it leaves disagree in sign.
    `attribution+verify` checks flagged cells exactly.

`verify_attribution` computes the estimate's top cells, the flagged ones and a seeded
random sample of the rest exactly and reports the agreement (`spearman`, `top10_recall`,
`cells`). `rank_agreement` is the same comparison for two full matrices (the benchmark's).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from ..models.sites import Intervention, SiteModel
from ..models.tasks.base import PatchPair, Task
from .ablation import fit
from .patching import (ALL_STEPS, Direction, PatchingResult, _causal_horizon, _finish, _is_noop, _patcher, _Scorer,
                       _Setup, sweep_sites)
from .results import jsonable
from .runs import Progress, bytes_per_row, forward, report, sub_progress, tile
from .sites import check_compatible, evaluating, model_device, specs, step_size

Mode = Literal["exact", "attribution", "attribution+verify"]
MODES: tuple[str, ...] = Mode.__args__  # type: ignore[attr-defined]
CANCELLATION_MARGIN = 0.05  # recovery units: below this a route's share is noise, not cancellation
GRAD_MEMORY_FACTOR = 3  # a forward pass kept for backward holds about this much more than a no-grad one


@dataclass
class AttributionResult(PatchingResult):
    """`PatchingResult`'s layout (scores, patched, summary) holding estimates, plus how
    they were made and where they are doubtful."""

    label: str = "estimated"
    method: str = "AtP*"  # "AtP": first order only; "AtP*": with the corrections of the module doc
    exact_cells: int = 0  # cells computed exactly (distribution sites) rather than estimated
    routes: list[str] = field(default_factory=list)  # GradDrop's routes, blocked one at a time
    cancellation: Tensor | None = None  # same shape as scores: largest change of the estimate when one route is blocked
    flagged: int = 0  # cells whose estimate may hide cancelling paths
    verify: dict | None = None  # filled by verify_attribution

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["summary"]["label"] = self.label
        d["summary"]["method"] = self.method
        return d


# -- setup ------------------------------------------------------------------------------------

def route_of(name: str) -> str:
    """GradDrop's route of a site: its layer in a stacked model (`layers.3`), else the site."""
    m = re.match(r"^(layers\.\d+)\.", name)
    return m.group(1) if m else name


# -- the gradient pass --------------------------------------------------------------------------

def _probe(value: Tensor, t: int, probe: Tensor, drop_rows: Tensor | None) -> Tensor:
    """The site's value plus a zero probe (the gradient handle); in `drop_rows` the value
    is cut from the graph first, so no gradient flows back through this site there."""
    if drop_rows is not None:
        value = torch.where(drop_rows.view(-1, *([1] * (value.dim() - 1))), value.detach(), value)
    return value + fit(probe[:, t], value)


def _gradient_blocks(model: SiteModel, scorer: _Scorer, inputs: Tensor, names: list[str], T: int,
                     blocks: list[str | None], record: bool):
    """One forward pass with gradients over `len(blocks)` row blocks of the pair batch
    (block k blocks the gradient through the sites of route `blocks[k]`; None: nothing)
    and one backward pass. Returns the per-block scores `[k]`, the gradient of each
    block's score with respect to every site's value `{name: [k, B, T, *shape]}`, and
    (with `record`) the logits and site values of the first block."""
    all_specs = specs(model)
    device = model_device(model)
    B = inputs.shape[0]
    k = len(blocks)
    probes = {n: torch.zeros(k * B, T, *step_size(all_specs[n], T), device=device, requires_grad=True)
              for n in names}
    ivs = []
    for n in names:
        dropped = torch.tensor([b is not None and route_of(n) == b for b in blocks], device=device)
        drop_rows = dropped.repeat_interleave(B) if bool(dropped.any()) else None
        ivs.append(Intervention(n, lambda v, t, p=probes[n], d=drop_rows: _probe(v, t, p, d)))
    from ..models.sites import hooks

    with torch.enable_grad(), hooks(model, names if record else (), ivs) as trace:
        logits = model(tile(inputs, k).to(device))
        per_block = scorer(logits.cpu())
        grads = torch.autograd.grad(per_block.sum(), [probes[n] for n in names], allow_unused=True)
    out = {}
    for n, g in zip(names, grads):
        g = torch.zeros_like(probes[n]) if g is None else g
        out[n] = g.detach().cpu().view(k, B, *g.shape[1:])
    first = None
    if record:
        first = (logits.detach()[:B].cpu(), {n: trace[n].detach()[:B].cpu() for n in names})
    return per_block.detach(), out, first


def _cell_sums(prod: Tensor, axis_pos: int | None) -> Tensor:
    """`[k, B, T, *shape]` -> `[k, T]`, or `[k, T, elements]` along the per-element axis."""
    k, B, T = prod.shape[:3]
    if axis_pos is None:
        return prod.reshape(k, B, T, -1).sum(dim=(1, 3))
    moved = prod.movedim(3 + axis_pos, 3)
    return moved.reshape(k, B, T, moved.shape[3], -1).sum(dim=(1, 4))


# -- exact cells ---------------------------------------------------------------------------------

def exact_cells(model: SiteModel, st: _Setup, cells: Sequence[int], base_score: float, *,
                memory_budget_mb: float = 512, progress: Progress | None = None) -> Tensor:
    """The exact raw score S of chosen variants (indices into `st.variants`), batched and
    with the exact shortcuts of `patch_sweep` (no-op patches and patches after the last
    scored step of a causal model score as the base run, `base_score`). Returns `[len(cells)]`."""
    raw = torch.full((len(cells),), base_score)
    if not cells:
        return raw
    steps = _causal_horizon(model, st)
    todo = [j for j, v in enumerate(cells)
            if st.variants[v][1] < steps and not _is_noop(st, *st.variants[v])]
    inputs = st.base_inputs[:, :steps]
    per_chunk = max(1, int(memory_budget_mb * 2**20 // max(bytes_per_row(specs(model), steps) * st.B, 1)))
    chunks = [todo[k:k + per_chunk] for k in range(0, len(todo), per_chunk)]
    for c, chunk in enumerate(chunks):
        plan: dict[int, dict[int, list[tuple[int, int | None]]]] = {}
        for j, jj in enumerate(chunk):
            i, t, e = st.variants[cells[jj]]
            plan.setdefault(i, {}).setdefault(t, []).append((j * st.B, e))
        ivs = [Intervention(st.sites[i], _patcher(st.source[st.sites[i]], by_t, st.axis_pos[i], st.B))
               for i, by_t in plan.items()]
        logits, _ = forward(model, tile(inputs, len(chunk)), (), ivs)
        raw[chunk] = st.scorer(logits)
        report(progress, (c + 1) / len(chunks))
    return raw


# -- the estimate -------------------------------------------------------------------------------

def attribution_patch(model: SiteModel, task: Task, pair: PatchPair, sites: Sequence[str] | None = None, *,
                      direction: Direction = "denoise", per_element: str | None = None,
                      exact_distributions: bool = True, graddrop: bool = True, memory_budget_mb: float = 512,
                      progress: Progress | None = None) -> AttributionResult:
    """The estimated [site, timestep(, element)] matrix of normalised recovery, in
    `patch_sweep`'s layout. With `exact_distributions=False, graddrop=False` it is plain
    AtP (one source forward, one base forward with gradients, one backward)."""
    report(progress, 0.0)
    check_compatible(model, task)
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    all_specs = specs(model)
    names, axis_pos, sizes = sweep_sites(model, sites, per_element)
    B, T = pair.clean.mask.shape
    scorer = _Scorer(task, pair)
    denoise = direction == "denoise"
    base_inputs = pair.corrupted.inputs if denoise else pair.clean.inputs
    source_inputs = pair.clean.inputs if denoise else pair.corrupted.inputs
    with evaluating(model):
        src_logits, source = forward(model, source_inputs, names)
        report(progress, 0.2)
        routes = sorted({route_of(n) for n in names}, key=[route_of(n) for n in names].index) if graddrop else []
        blocks: list[str | None] = [None, *routes]
        # the plain block first, then every route's; chunked so each pass fits the budget
        per_block = bytes_per_row(all_specs, T) * B * GRAD_MEMORY_FACTOR
        per_chunk = max(1, int(memory_budget_mb * 2**20 // max(per_block, 1)))
        scores_k, grads_k, first = [], {n: [] for n in names}, None
        chunks = [blocks[k:k + per_chunk] for k in range(0, len(blocks), per_chunk)]
        for c, chunk in enumerate(chunks):
            s, g, rec = _gradient_blocks(model, scorer, base_inputs, names, T, chunk, record=c == 0)
            scores_k.append(s)
            for n in names:
                grads_k[n].append(g[n])
            first = first if rec is None else rec
            report(sub_progress(progress, 0.2, 0.7), (c + 1) / len(chunks))
    base_logits, base_vals = first
    s_base, s_src = float(scores_k[0][0]), float(scorer(src_logits)[0])
    s_clean, s_corr = (s_src, s_base) if denoise else (s_base, s_src)
    variants = [(i, t, (e if per_element is not None else None))
                for i in range(len(names)) for t in range(T) for e in range(sizes[i])]
    elements = list(range(max(sizes))) if per_element is not None else None
    st = _Setup(names, axis_pos, sizes, variants, base_inputs, source, base_vals, scorer, s_clean, s_corr,
                B, T, base_logits, elements)

    # first-order effect of each cell, for the plain block [0] and each blocked route [1:]
    effects = {}
    for i, n in enumerate(names):
        delta = source[n] - base_vals[n]  # [B, T, *shape], padded alike for growing axes
        effects[i] = _cell_sums(torch.cat(grads_k[n]) * delta.unsqueeze(0), axis_pos[i])
    est = torch.empty(len(variants))
    spread = torch.zeros(len(variants))
    for v, (i, t, e) in enumerate(variants):
        cell = effects[i][:, t] if e is None else effects[i][:, t, e]
        est[v] = s_base + cell[0]
        if len(cell) > 1:
            spread[v] = (cell[1:] - cell[0]).abs().max()

    exact = [v for v, (i, _, _) in enumerate(variants) if all_specs[names[i]].distribution] if exact_distributions else []
    if exact:
        with evaluating(model):
            est[exact] = exact_cells(model, st, exact, s_base, memory_budget_mb=memory_budget_mb,
                                     progress=sub_progress(progress, 0.7, 1.0))
    result = _finish(st, est, direction, per_element, skipped=0)
    gap = abs(s_clean - s_corr)
    cancel = torch.full_like(result.scores, float("nan"))
    flagged = 0
    if graddrop and gap >= 1e-6:
        exact_set = set(exact)
        for v, (i, t, e) in enumerate(variants):
            idx = (i, t) if e is None else (i, t, e)
            cancel[idx] = spread[v] / gap
            if v not in exact_set and spread[v] / gap > abs(est[v] - s_base) / gap + CANCELLATION_MARGIN:
                flagged += 1
    method = "AtP*" if (exact_distributions or graddrop) else "AtP"
    report(progress, 1.0)
    return AttributionResult(**{f: getattr(result, f) for f in PatchingResult.__dataclass_fields__},
                             method=method, exact_cells=len(exact), routes=routes,
                             cancellation=cancel if graddrop else None, flagged=flagged)


# -- agreement with exact patching ----------------------------------------------------------------

def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (many cells tie at the base score: nothing to patch there)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def agreement(estimated: Tensor, exact: Tensor, direction: str, k: int = 10) -> dict:
    """Spearman rank correlation of two recovery arrays (same cells, any shape; NaN cells
    left out) and the top-k recall: the share of the k cells with the largest exact effect
    (|recovery - 0| when denoising, |recovery - 1| when noising) that are also among the k
    largest estimated ones."""
    est, ex = estimated.reshape(-1).double(), exact.reshape(-1).double()
    keep = torch.isfinite(est) & torch.isfinite(ex)
    est, ex = est[keep].numpy(), ex[keep].numpy()
    n = len(est)
    out = {"spearman": None, f"top{k}_recall": None, "cells": n}
    if n < 2:
        return out
    re, rx = _ranks(est), _ranks(ex)
    if re.std() > 0 and rx.std() > 0:
        out["spearman"] = float(np.corrcoef(re, rx)[0, 1])
    base = 0.0 if direction == "denoise" else 1.0
    kk = min(k, n)
    top_est = set(np.argsort(-np.abs(est - base), kind="mergesort")[:kk].tolist())
    top_ex = set(np.argsort(-np.abs(ex - base), kind="mergesort")[:kk].tolist())
    out[f"top{k}_recall"] = len(top_est & top_ex) / kk
    return out


def verify_attribution(model: SiteModel, task: Task, pair: PatchPair, estimate: AttributionResult, *,
                       top_k: int = 20, sample: int = 40, seed: int = 0, memory_budget_mb: float = 512,
                       progress: Progress | None = None) -> dict:
    """Check an estimate exactly where it matters: its `top_k` cells by estimated effect,
    every flagged cell (possible cancellation) and a seeded random `sample` of the rest.
    Sets and returns `estimate.verify`: `spearman` and `top10_recall` over the checked
    cells, their count `cells`, the largest |estimated - exact| recovery, and the checked
    cells themselves (`checked`: site, t, element, estimated, exact)."""
    from .patching import _setup

    report(progress, 0.0)
    with evaluating(model):
        st = _setup(model, task, pair, estimate.sites, estimate.direction, estimate.per_element)
    # the estimate has per-step cells only: verify those (not exact patching's all-steps variants)
    st.variants = [(i, t, e) for i, t, e in st.variants if t != ALL_STEPS]
    est = torch.tensor([float(estimate.scores[(i, t) if e is None else (i, t, e)]) for i, t, e in st.variants])
    base = 0.0 if estimate.direction == "denoise" else 1.0
    effect = torch.nan_to_num((est - base).abs(), nan=-1.0)
    order = torch.argsort(effect, descending=True, stable=True).tolist()
    chosen = order[:top_k]
    n_top = len(chosen)
    cancel = estimate.cancellation
    if cancel is not None:
        for v, (i, t, e) in enumerate(st.variants):
            idx = (i, t) if e is None else (i, t, e)
            c = float(cancel[idx])
            if c == c and c > abs(float(est[v]) - base) + CANCELLATION_MARGIN and v not in chosen:
                chosen.append(v)
    n_flagged = len(chosen) - n_top
    taken = set(chosen)
    rest = [v for v in order if v not in taken]
    chosen += random.Random(seed).sample(rest, min(sample, len(rest)))
    # cells the estimate already computed exactly need no second run
    already = {v for v, (i, _, _) in enumerate(st.variants)
               if estimate.exact_cells and specs(model)[st.sites[i]].distribution}
    todo = [v for v in chosen if v not in already]
    s_base = st.s_corr if estimate.direction == "denoise" else st.s_clean
    with evaluating(model):
        raw = exact_cells(model, st, todo, s_base, memory_budget_mb=memory_budget_mb,
                          progress=sub_progress(progress, 0.1, 1.0))
    gap = st.s_clean - st.s_corr
    exact = est.clone()
    for v, r in zip(todo, raw.tolist()):
        exact[v] = (r - st.s_corr) / gap if abs(gap) >= 1e-6 else float("nan")
    idx = torch.tensor(chosen, dtype=torch.long)
    out = agreement(est[idx], exact[idx], estimate.direction)
    diff = (est[idx] - exact[idx]).abs()
    out["max_abs_diff"] = float(diff[torch.isfinite(diff)].max()) if torch.isfinite(diff).any() else None
    out.update(top_k=n_top, flagged=n_flagged, sampled=len(chosen) - n_top - n_flagged)
    out["checked"] = [{"site": st.sites[st.variants[v][0]], "t": st.variants[v][1], "element": st.variants[v][2],
                       "estimated": jsonable(float(est[v])), "exact": jsonable(float(exact[v]))} for v in chosen]
    estimate.verify = out
    report(progress, 1.0)
    return out
