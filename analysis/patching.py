"""Activation patching per site and timestep, batched.

From a task's clean/corrupted pairs (same length, answers differing at `pair.differs`):
  denoise  run the corrupted input, and replace one site at one timestep by its value
           from the clean run: how much of the clean answer comes back?
  noise    run the clean input, and replace one site at one timestep by its value from
           the corrupted run: how much of the clean answer survives?

Score (the standard logit difference, Wang et al. 2022; Heimersheim & Nanda 2024): on
every scored element where the answers differ -- each differing bit for bit outputs,
each differing position for class outputs -- take

    log p(clean answer) - log p(corrupted answer)

(for a bit this is the logit signed towards the clean bit; for classes it is the logit
of the clean class minus that of the corrupted class), averaged over all those elements
of all pairs: S. The reported value is the normalised recovery

    (S_patched - S_corrupted) / (S_clean - S_corrupted)

pooled over the pairs (a ratio of means, so no pair with a tiny gap dominates). It is 0
when the patch leaves the corrupted run's answer, 1 when it gives the clean run's
answer, in both directions: for denoising a high value means the site at t carries
enough of the clean information to restore the answer; for noising a low value means
the answer needs that site at t.

Batching: every (site, t[, element]) variant is a block of rows of one batch (the pair
batch tiled once per variant) and one site function per site patches only its
variants' rows at their timestep, so the whole sweep is one forward pass per chunk
(chunks sized to a memory budget) instead of one per variant. Two exact shortcuts
skip work the score cannot see: a variant whose source value equals the base run's
value at that site and step in every row is not run (its patched run *is* the base
run), and for causal models -- checked on the base run, not assumed -- the batched run
stops after the last scored step, and patches later than it are not run either (they
cannot reach a scored output). Skipped variants get the base run's score. `patch_sweep_naive` is the one-forward-per-patch loop
(as TransformerLens's generic patching), kept for the equality test and the benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import Tensor

from ..models.sites import Intervention, SiteModel
from ..models.tasks.base import PatchPair, Task
from .ablation import fit
from .results import Result, jsonable
from .runs import Progress, forward, report, rows_per_chunk, sub_progress, tile
from .sites import bypass_sites, check_compatible, check_sites, element_mask, evaluating, memory_sites, specs

Direction = Literal["denoise", "noise"]
SCORE_NAME = "answer_logit_diff"


@dataclass
class PatchingResult(Result):
    sites: list[str]
    steps: int
    direction: str
    per_element: str | None
    elements: list[int] | None  # indices along `per_element` (the third axis of `scores`)
    scores: Tensor  # [site, t] or [site, t, element]: normalised recovery (NaN: element absent)
    patched: Tensor  # same shape: the raw score S of each patched run
    score_clean: float
    score_corrupted: float
    pairs: int
    positions: int  # scored elements (differing bits or positions) over all pairs
    score_name: str = SCORE_NAME
    skipped: int = 0  # variants not run because they cannot change the score (see the module doc)
    note: str = ""

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["summary"] = jsonable(self.summary())
        return d

    def summary(self) -> dict:
        """Per site: the strongest recovery, where in time it is, and the mean over time."""
        out = {}
        for i, name in enumerate(self.sites):
            s = self.scores[i]
            flat = torch.nan_to_num(s, nan=-float("inf"))
            if not torch.isfinite(flat).any():
                out[name] = {"max": None, "t_max": None, "mean": None}
                continue
            k = int(flat.reshape(-1).argmax())
            entry = {"max": float(s.reshape(-1)[k]), "mean": float(torch.nanmean(s))}
            if s.dim() == 2:  # [T, element]
                entry["t_max"] = k // s.shape[1]
                entry["element_max"] = k % s.shape[1]
            else:
                entry["t_max"] = k
            out[name] = entry
        return {
            "direction": self.direction,
            "score": self.score_name,
            "score_clean": self.score_clean,
            "score_corrupted": self.score_corrupted,
            "pairs": self.pairs,
            "positions": self.positions,
            "sites": out,
            "note": self.note,
        }


class _Scorer:
    """S for blocks of rows: the mean over the differing elements of
    log p(clean answer) - log p(corrupted answer)."""

    def __init__(self, task: Task, pair: PatchPair):
        tc, tk = pair.clean.targets, pair.corrupted.targets
        if tc.shape != tk.shape or pair.clean.inputs.shape != pair.corrupted.inputs.shape:
            raise ValueError("patch pair: clean and corrupted batches must have the same shapes")
        self.bits = task.output_kind == "bits"
        differs = pair.differs.bool() & pair.clean.mask.bool()
        if self.bits:
            self.elems = (differs[..., None] & (tc != tk)).float()  # [B, T, bits]
            self.sign = 2 * tc.float() - 1
        else:
            self.elems = (differs & (tc != tk)).float()  # [B, T]
            self.tc, self.tk = tc.long(), tk.long()
        self.count = int(self.elems.sum())
        if self.count == 0:
            raise ValueError("patch pair: no scored position has different answers in the clean and corrupted "
                             "batches, so there is nothing to recover")

    @property
    def last_step(self) -> int:
        """The last timestep with a scored element."""
        per_step = self.elems.reshape(self.elems.shape[0], self.elems.shape[1], -1).sum(dim=(0, 2))
        return int(per_step.nonzero().max())

    def __call__(self, logits: Tensor) -> Tensor:
        """logits `[k*B, T', out]` -> `[k]` scores, one per block of B rows; T' may stop
        after the last scored step."""
        B, T = self.elems.shape[0], logits.shape[1]
        lg = logits.reshape(-1, B, *logits.shape[1:])
        elems = self.elems[:, :T]
        if self.bits:
            val = (lg * self.sign[:, :T] * elems).sum(dim=(1, 2, 3))
        else:
            gc = lg.gather(-1, self.tc[:, :T].expand(lg.shape[0], -1, -1).unsqueeze(-1)).squeeze(-1)
            gk = lg.gather(-1, self.tk[:, :T].expand(lg.shape[0], -1, -1).unsqueeze(-1)).squeeze(-1)
            val = ((gc - gk) * elems).sum(dim=(1, 2))
        return val / self.count


@dataclass
class _Setup:
    sites: list[str]
    axis_pos: list[int | None]
    sizes: list[int]
    variants: list[tuple[int, int, int | None]]  # (site index, t, element)
    base_inputs: Tensor
    source: dict[str, Tensor]
    base_vals: dict[str, Tensor]
    scorer: _Scorer
    s_clean: float
    s_corr: float
    B: int
    T: int
    base_logits: Tensor
    elements: list[int] | None = field(default=None)


def _setup(model: SiteModel, task: Task, pair: PatchPair, sites: Sequence[str] | None, direction: str,
           per_element: str | None) -> _Setup:
    check_compatible(model, task)
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    all_specs = specs(model)
    if sites is None:
        names = memory_sites(model) + bypass_sites(model)
        if per_element is not None:
            names = [n for n in names if per_element in all_specs[n].axes]
    else:
        names = check_sites(model, sites)
    if not names:
        raise ValueError("no sites to patch" + (f" with an axis {per_element!r}" if per_element else ""))
    axis_pos: list[int | None] = [None] * len(names)
    sizes = [1] * len(names)
    if per_element is not None:
        for i, n in enumerate(names):
            spec = all_specs[n]
            if per_element not in spec.axes:
                raise ValueError(f"site {n!r} has no axis {per_element!r}; its axes are {list(spec.axes)}")
            axis_pos[i] = spec.axes.index(per_element)
            size = spec.shape[axis_pos[i]]
            if size is None:
                raise ValueError(f"site {n!r}: axis {per_element!r} grows with the sequence; patch per element "
                                 "along a fixed-size axis")
            sizes[i] = int(size)
    B, T = pair.clean.mask.shape
    scorer = _Scorer(task, pair)
    clean_logits, clean_vals = forward(model, pair.clean.inputs, names)
    corr_logits, corr_vals = forward(model, pair.corrupted.inputs, names)
    s_clean, s_corr = float(scorer(clean_logits)[0]), float(scorer(corr_logits)[0])
    if direction == "denoise":
        base_inputs, source, base_vals, base_logits = pair.corrupted.inputs, clean_vals, corr_vals, corr_logits
    else:
        base_inputs, source, base_vals, base_logits = pair.clean.inputs, corr_vals, clean_vals, clean_logits
    variants = [(i, t, (e if per_element is not None else None))
                for i in range(len(names)) for t in range(T) for e in range(sizes[i])]
    elements = list(range(max(sizes))) if per_element is not None else None
    return _Setup(names, axis_pos, sizes, variants, base_inputs, source, base_vals, scorer, s_clean, s_corr,
                  B, T, base_logits, elements)


def _select(x: Tensor, axis_pos: int | None, e: int | None) -> Tensor:
    """x `[rows, *shape]` narrowed to element e along a per-step axis (or whole)."""
    if e is None:
        return x
    return x[(slice(None),) * (axis_pos + 1) + (slice(e, e + 1),)]


def _is_noop(st: _Setup, i: int, t: int, e: int | None) -> bool:
    name = st.sites[i]
    src = _select(st.source[name][:, t], st.axis_pos[i], e)
    base = _select(st.base_vals[name][:, t], st.axis_pos[i], e)
    return bool(torch.equal(src, base))


def _finish(st: _Setup, raw: Tensor, direction: str, per_element: str | None, skipped: int) -> PatchingResult:
    gap = st.s_clean - st.s_corr
    note = ""
    if abs(gap) < 1e-6:
        note = ("the clean and corrupted runs score the same, so recovery is undefined (NaN): the model does not "
                "distinguish the two answers")
        scores = torch.full_like(raw, float("nan"))
    else:
        scores = (raw - st.s_corr) / gap
    if per_element is None:
        shape = (len(st.sites), st.T)
    else:
        shape = (len(st.sites), st.T, max(st.sizes))
    out_s = torch.full(shape, float("nan"))
    out_r = torch.full(shape, float("nan"))
    for v, (i, t, e) in enumerate(st.variants):
        idx = (i, t) if e is None else (i, t, e)
        out_s[idx] = scores[v]
        out_r[idx] = raw[v]
    return PatchingResult(sites=st.sites, steps=st.T, direction=direction, per_element=per_element,
                          elements=st.elements, scores=out_s, patched=out_r, score_clean=st.s_clean,
                          score_corrupted=st.s_corr, pairs=st.B, positions=st.scorer.count, skipped=skipped,
                          note=note)


def patch_sweep(model: SiteModel, task: Task, pair: PatchPair, sites: Sequence[str] | None = None, *,
                direction: Direction = "denoise", per_element: str | None = None,
                memory_budget_mb: float = 512, progress: Progress | None = None) -> PatchingResult:
    """The [site, timestep] (or [site, timestep, element]) matrix of normalised recovery,
    every variant a block of rows of one batched forward pass per chunk.

    sites: names or globs; default every memory-path site plus the bypass sites.
    per_element: an axis name ("head", "slot", ...) to patch its elements one at a time.
    """
    report(progress, 0.0)
    with evaluating(model):
        st = _setup(model, task, pair, sites, direction, per_element)
        report(progress, 0.05)
        raw = torch.full((len(st.variants),), st.s_corr if direction == "denoise" else st.s_clean)
        steps = _causal_horizon(model, st)
        todo = [v for v, (i, t, e) in enumerate(st.variants) if t < steps and not _is_noop(st, i, t, e)]
        inputs = st.base_inputs[:, :steps]
        per_chunk = rows_per_chunk(specs(model), steps, st.B, memory_budget_mb)
        chunks = [todo[k:k + per_chunk] for k in range(0, len(todo), per_chunk)]
        for c, chunk in enumerate(chunks):
            plan: dict[int, dict[int, list[tuple[int, int | None]]]] = {}
            for j, v in enumerate(chunk):
                i, t, e = st.variants[v]
                plan.setdefault(i, {}).setdefault(t, []).append((j * st.B, e))
            ivs = [Intervention(st.sites[i], _patcher(st.source[st.sites[i]], by_t, st.axis_pos[i], st.B))
                   for i, by_t in plan.items()]
            logits, _ = forward(model, tile(inputs, len(chunk)), (), ivs)
            raw[chunk] = st.scorer(logits)
            report(sub_progress(progress, 0.05, 1.0), (c + 1) / len(chunks))
    report(progress, 1.0)
    return _finish(st, raw, direction, per_element, skipped=len(st.variants) - len(todo))


def _causal_horizon(model: SiteModel, st: _Setup) -> int:
    """How many steps the patched runs need: up to the last scored step, when the model
    is causal there. Outputs at a step then depend only on earlier inputs and patches, so
    later steps need not be computed and patches after the last scored step cannot move
    the score. Causality is checked, not assumed: the base run cut after the last scored
    step must reproduce the full run's outputs, else the full length is used."""
    steps = st.scorer.last_step + 1
    if steps >= st.T:
        return st.T
    cut, _ = forward(model, st.base_inputs[:, :steps])
    full = st.base_logits[:, :steps]
    if cut.shape == full.shape and torch.allclose(cut, full, rtol=1e-4, atol=1e-5):
        return steps
    return st.T


def _patcher(src: Tensor, by_t: dict[int, list[tuple[int, int | None]]], axis_pos: int | None, B: int):
    """One site's patches for every variant of a chunk: at step t, the rows of the
    variants patched at t take the source run's value (or one element of it)."""

    def patch(value: Tensor, t: int) -> Tensor:
        entries = by_t.get(t)
        if not entries:
            return value
        out = value.clone()
        s_t = fit(src[:, t], value).to(value)  # [B, *shape]
        for r0, e in entries:
            if e is None:
                out[r0:r0 + B] = s_t
            else:
                idx = (slice(None),) * axis_pos + (e,)
                out[(slice(r0, r0 + B),) + idx] = s_t[(slice(None),) + idx]
        return out

    return patch


def patch_sweep_naive(model: SiteModel, task: Task, pair: PatchPair, sites: Sequence[str] | None = None, *,
                      direction: Direction = "denoise", per_element: str | None = None,
                      memory_budget_mb: float = 512, progress: Progress | None = None) -> PatchingResult:
    """The same sweep, one forward pass per (site, t[, element]) with a plain tensor
    intervention from the site contract: the reference for tests and the benchmark.
    (`memory_budget_mb` is accepted for a matching signature; each pass is one pair batch.)"""
    report(progress, 0.0)
    all_specs = specs(model)
    with evaluating(model):
        st = _setup(model, task, pair, sites, direction, per_element)
        raw = torch.empty(len(st.variants))
        for v, (i, t, e) in enumerate(st.variants):
            name = st.sites[i]
            spec = all_specs[name]
            elements = None if e is None else element_mask(spec, {per_element: [e]})
            if None in spec.shape:
                src = st.source[name]  # grows with t: a function crops the padded record to the live shape
                value = lambda x, t_, s=src: fit(s[:, t_], x)  # noqa: E731
            else:
                value = st.source[name]
            iv = Intervention(name, value, steps=[t], elements=elements)
            logits, _ = forward(model, st.base_inputs, (), [iv])
            raw[v] = st.scorer(logits)[0]
            report(progress, (v + 1) / len(st.variants))
    return _finish(st, raw, direction, per_element, skipped=0)
