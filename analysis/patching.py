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

Intervals and alignment (whole-site sweeps): each cell's 95% interval is a bootstrap over
pairs (the pooled ratio recomputed on resampled pairs); `all_steps` patches a site at
every timestep at once (how much the site carries in total); `aligned["item"]` and
`aligned["answer"]` re-index the sweep by each pair's offset from its corrupted input
step and from its first differing answer, so a peak is not smeared by where each pair's
item happens to fall (absolute timesteps stay in `scores`).

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

Prefix reuse (recurrent models with the site contract's resume API: NTM, DNC, LSTM, stacks of
linear memory and MLPs): a patch at t cannot change steps before t, so the base run is
computed once, step by step, keeping the state entering each step, and each patched run
resumes at its own t from there (analysis/prefix.py): about half the row-steps of full
passes. Used automatically when the model supports it and every swept site has a fixed
shape (an attention pattern over all earlier keys is not a step's value); `prefix_reuse=False`
forces full passes. The step-by-step base run must reproduce the forward pass's outputs
(checked, else full passes are used), so results equal the full sweep's within float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import Tensor

from ..models.sites import Intervention, SiteModel
from ..models.tasks.base import PatchPair, Task
from .ablation import fit
from .prefix import base_run, resumed_runs
from .results import Result, jsonable
from .runs import Progress, forward, report, rows_per_chunk, sub_progress, tile
from .sites import bypass_sites, check_compatible, check_sites, element_mask, evaluating, memory_sites, specs

Direction = Literal["denoise", "noise"]
SCORE_NAME = "answer_logit_diff"
ALL_STEPS = -1  # a variant's t when it patches every timestep at once
N_BOOT = 500  # bootstrap samples over pairs for the intervals


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
    # added (intervals and alignments; None for per-element sweeps): 95% bootstrap interval of
    # each cell over pairs `[site, t, 2]`; the all-steps patch per site (every timestep at
    # once) with its interval; and the sweep re-indexed by each pair's offset from its
    # corrupted item and from its first differing answer (`aligned`, see `align`)
    ci95: Tensor | None = None
    all_steps: list[float] | None = None
    all_steps_ci95: list[list[float]] | None = None
    aligned: dict | None = None
    n_boot: int = 0

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
                # noising: the low cells are the news (the answer needs the site there)
                low = int(torch.nan_to_num(s, nan=float("inf")).argmin())
                entry["min"], entry["t_min"] = float(s[low]), low
                if self.ci95 is not None:
                    entry["ci95_at_max"] = [float(x) for x in self.ci95[i, k]]
                    entry["ci95_at_min"] = [float(x) for x in self.ci95[i, low]]
            if self.all_steps is not None:
                entry["all_steps"] = self.all_steps[i]
                entry["all_steps_ci95"] = self.all_steps_ci95[i]
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

    @property
    def pair_counts(self) -> Tensor:
        """`[B]` scored elements of each pair."""
        return self.elems.reshape(self.elems.shape[0], -1).sum(1)

    def per_pair(self, logits: Tensor) -> Tensor:
        """logits `[k*B, T', out]` -> `[k, B]` sums of the logit difference per pair (T' may
        stop after the last scored step)."""
        B, T = self.elems.shape[0], logits.shape[1]
        lg = logits.reshape(-1, B, *logits.shape[1:])
        elems = self.elems[:, :T]
        if self.bits:
            return (lg * self.sign[:, :T] * elems).sum(dim=(2, 3))
        gc = lg.gather(-1, self.tc[:, :T].expand(lg.shape[0], -1, -1).unsqueeze(-1)).squeeze(-1)
        gk = lg.gather(-1, self.tk[:, :T].expand(lg.shape[0], -1, -1).unsqueeze(-1)).squeeze(-1)
        return ((gc - gk) * elems).sum(dim=2)

    def per_row(self, logits: Tensor, pairs: Tensor) -> Tensor:
        """logits `[n, T', out]` of runs of the pairs `pairs` `[n]` -> `[n]` sums of the logit
        difference, each row scored against its own pair's answers."""
        T = logits.shape[1]
        elems = self.elems[pairs, :T]
        if self.bits:
            return (logits * self.sign[pairs, :T] * elems).sum(dim=(1, 2))
        gc = logits.gather(-1, self.tc[pairs, :T].unsqueeze(-1)).squeeze(-1)
        gk = logits.gather(-1, self.tk[pairs, :T].unsqueeze(-1)).squeeze(-1)
        return ((gc - gk) * elems).sum(dim=1)

    def __call__(self, logits: Tensor) -> Tensor:
        """logits `[k*B, T', out]` -> `[k]` scores, one per block of B rows."""
        return self.per_pair(logits).sum(1) / self.count


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
    clean_pairs: Tensor | None = None  # [B] per-pair sums of the score, clean run
    corr_pairs: Tensor | None = None  # [B] corrupted run
    anchors: dict[str, Tensor] = field(default_factory=dict)  # {"item", "answer"}: [B] each pair's step


def sweep_sites(model: SiteModel, sites: Sequence[str] | None, per_element: str | None):
    """The sites a sweep patches (default: the memory and bypass sites, those with the
    `per_element` axis when one is given), each one's element-axis position and size."""
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
    return names, axis_pos, sizes


def _setup(model: SiteModel, task: Task, pair: PatchPair, sites: Sequence[str] | None, direction: str,
           per_element: str | None) -> _Setup:
    check_compatible(model, task)
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    names, axis_pos, sizes = sweep_sites(model, sites, per_element)
    B, T = pair.clean.mask.shape
    scorer = _Scorer(task, pair)
    clean_logits, clean_vals = forward(model, pair.clean.inputs, names)
    corr_logits, corr_vals = forward(model, pair.corrupted.inputs, names)
    s_clean, s_corr = float(scorer(clean_logits)[0]), float(scorer(corr_logits)[0])
    clean_pairs, corr_pairs = scorer.per_pair(clean_logits)[0], scorer.per_pair(corr_logits)[0]
    if direction == "denoise":
        base_inputs, source, base_vals, base_logits = pair.corrupted.inputs, clean_vals, corr_vals, corr_logits
    else:
        base_inputs, source, base_vals, base_logits = pair.clean.inputs, corr_vals, clean_vals, clean_logits
    variants = [(i, t, (e if per_element is not None else None))
                for i in range(len(names)) for t in range(T) for e in range(sizes[i])]
    if per_element is None:  # and every step at once, per site
        variants += [(i, ALL_STEPS, None) for i in range(len(names))]
    elements = list(range(max(sizes))) if per_element is not None else None
    changed = (pair.clean.inputs != pair.corrupted.inputs)
    changed = changed.reshape(B, T, -1).any(-1) if changed.dim() > 2 else changed
    anchors = {"item": _first(changed), "answer": _first(pair.differs.bool() & pair.clean.mask.bool())}
    return _Setup(names, axis_pos, sizes, variants, base_inputs, source, base_vals, scorer, s_clean, s_corr,
                  B, T, base_logits, elements, clean_pairs, corr_pairs, anchors)


def _first(flags: Tensor) -> Tensor:
    """`[B]` the first step flagged in each row (0 where none is)."""
    T = flags.shape[1]
    t = torch.arange(T).expand_as(flags)
    return torch.where(flags, t, T).amin(1).clamp(max=T - 1)


def _select(x: Tensor, axis_pos: int | None, e: int | None) -> Tensor:
    """x `[rows, *shape]` narrowed to element e along a per-step axis (or whole)."""
    if e is None:
        return x
    return x[(slice(None),) * (axis_pos + 1) + (slice(e, e + 1),)]


def _is_noop(st: _Setup, i: int, t: int, e: int | None) -> bool:
    name = st.sites[i]
    if t == ALL_STEPS:
        return bool(torch.equal(st.source[name], st.base_vals[name]))
    src = _select(st.source[name][:, t], st.axis_pos[i], e)
    base = _select(st.base_vals[name][:, t], st.axis_pos[i], e)
    return bool(torch.equal(src, base))


def _finish(st: _Setup, raw_pairs: Tensor, direction: str, per_element: str | None, skipped: int,
            n_boot: int = N_BOOT, seed: int = 0) -> PatchingResult:
    """Scores from the per-pair sums `raw_pairs` `[variant, B]`: the pooled recovery of each
    cell, and (per_element None) its bootstrap interval over pairs, the all-steps patch and
    the anchored views. Pooled over pairs the counts cancel: recovery =
    sum_b (S_patched - S_corr) / sum_b (S_clean - S_corr), with pair weights w_b (1, or a
    bootstrap sample's multiplicities). An estimate with no per-pair resolution (attribution
    patching) passes `[variant]` mean scores instead: the same layout, without intervals."""
    per_pair = raw_pairs.dim() == 2
    raw = raw_pairs.sum(1) / st.scorer.count if per_pair else raw_pairs
    gap = st.s_clean - st.s_corr
    note = ""
    undefined = abs(gap) < 1e-6
    if undefined:
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
    cell_of: dict[tuple[int, int], int] = {}
    all_steps = [float("nan")] * len(st.sites)
    for v, (i, t, e) in enumerate(st.variants):
        if t == ALL_STEPS:
            all_steps[i] = float(scores[v])
            continue
        idx = (i, t) if e is None else (i, t, e)
        out_s[idx] = scores[v]
        out_r[idx] = raw[v]
        cell_of[(i, t)] = v
    result = PatchingResult(sites=st.sites, steps=st.T, direction=direction, per_element=per_element,
                            elements=st.elements, scores=out_s, patched=out_r, score_clean=st.s_clean,
                            score_corrupted=st.s_corr, pairs=st.B, positions=st.scorer.count, skipped=skipped,
                            note=note)
    if per_element is not None or undefined or not per_pair:
        return result
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, st.B, (n_boot, st.B), generator=g)
    weights = torch.zeros(n_boot, st.B).scatter_add_(1, idx, torch.ones(n_boot, st.B))  # [n_boot, B]
    base = st.corr_pairs.double()
    lift = raw_pairs.double() - base  # [V, B]
    gap_pairs = st.clean_pairs.double() - base  # [B]
    boot = _ratio(lift @ weights.double().T, gap_pairs[None] @ weights.double().T)  # [V, n_boot]
    lo, hi = _quantiles(boot)
    ci = torch.full((*shape, 2), float("nan"))
    for (i, t), v in cell_of.items():
        ci[i, t, 0], ci[i, t, 1] = min(lo[v], out_s[i, t]), max(hi[v], out_s[i, t])
    result.ci95 = ci
    alls = [v for v, (_, t, _) in enumerate(st.variants) if t == ALL_STEPS]
    result.all_steps = all_steps
    result.all_steps_ci95 = [[min(float(lo[v]), all_steps[k]), max(float(hi[v]), all_steps[k])]
                             for k, v in enumerate(alls)]
    result.n_boot = n_boot
    result.aligned = {name: _aligned(st, lift, gap_pairs, cell_of, anchor, weights)
                      for name, anchor in st.anchors.items()}
    return result


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den.abs() > 1e-9, num / torch.where(den.abs() > 1e-9, den, torch.ones_like(den)),
                       torch.full_like(num, float("nan")))


def _quantiles(x: Tensor) -> tuple[Tensor, Tensor]:
    q = torch.nanquantile(x, torch.tensor([0.025, 0.975], dtype=x.dtype), dim=-1)
    return q[0].float(), q[1].float()


def _aligned(st: _Setup, lift: Tensor, gap_pairs: Tensor, cell_of: dict, anchor: Tensor, weights: Tensor) -> dict:
    """Recovery by offset d from each pair's anchor (pair b patched at step anchor_b + d):
    `offsets`, `scores` `[site, D]`, `ci95` `[site, D, 2]` and `pairs` `[D]`, the pairs whose
    step anchor_b + d exists (the others are left out of that offset's ratio)."""
    B, T = st.B, st.T
    offsets = list(range(-int(anchor.max()), T - int(anchor.min())))
    steps = anchor[None] + torch.tensor(offsets)[:, None]  # [D, B]
    valid = (steps >= 0) & (steps < T)
    cell = torch.tensor([[cell_of.get((i, t), -1) for t in range(T)] for i in range(len(st.sites))])  # [site, T]
    v = cell[:, steps.clamp(0, T - 1)]  # [site, D, B]
    vals = lift[v.clamp(min=0), torch.arange(B)] * (valid & (v >= 0))  # [site, D, B]
    den = (gap_pairs * valid)  # [D, B]
    point = _ratio(vals.sum(-1), den.sum(-1)[None])  # [site, D]
    w = weights.double().T  # [B, n_boot]
    lo, hi = _quantiles(_ratio(vals @ w, (den @ w)[None]))
    ci = torch.stack([torch.minimum(lo, point.float()), torch.maximum(hi, point.float())], -1)
    return {"offsets": offsets, "scores": point.float(), "ci95": ci, "pairs": valid.sum(1).tolist()}


def patch_sweep(model: SiteModel, task: Task, pair: PatchPair, sites: Sequence[str] | None = None, *,
                direction: Direction = "denoise", per_element: str | None = None,
                memory_budget_mb: float = 512, progress: Progress | None = None,
                prefix_reuse: bool | None = None) -> PatchingResult:
    """The [site, timestep] (or [site, timestep, element]) matrix of normalised recovery,
    every variant a block of rows of one batched forward pass per chunk. Without
    per_element also each site patched at every step at once (`all_steps`), a 95%
    bootstrap interval over pairs per cell (`ci95`), and the sweep re-indexed by each
    pair's offset from its corrupted item and from its answer (`aligned`).

    sites: names or globs; default every memory-path site plus the bypass sites.
    per_element: an axis name ("head", "slot", ...) to patch its elements one at a time.
    prefix_reuse: None resumes patched runs from the base run's states where the model
        allows it (see the module doc), False always runs full passes, True requires resuming.
    """
    report(progress, 0.0)
    with evaluating(model):
        st = _setup(model, task, pair, sites, direction, per_element)
        report(progress, 0.05)
        base = st.corr_pairs if direction == "denoise" else st.clean_pairs
        raw = base[None].repeat(len(st.variants), 1)  # [V, B] per-pair sums; skipped variants keep the base's
        resume = _resume_plan(model, st, prefix_reuse)
        steps = resume[0] if resume else _causal_horizon(model, st)
        todo = [v for v, (i, t, e) in enumerate(st.variants) if t < steps and not _is_noop(st, i, t, e)]
        per_chunk = rows_per_chunk(specs(model), steps, st.B, memory_budget_mb)
        if resume:
            _sweep_resumed(model, st, todo, steps, resume[1], per_chunk * st.B, raw, progress)
        else:
            inputs = st.base_inputs[:, :steps]
            chunks = [todo[k:k + per_chunk] for k in range(0, len(todo), per_chunk)]
            for c, chunk in enumerate(chunks):
                plan: dict[int, dict[int, list[tuple[int, int | None]]]] = {}
                for j, v in enumerate(chunk):
                    i, t, e = st.variants[v]
                    for step in (range(steps) if t == ALL_STEPS else (t,)):
                        plan.setdefault(i, {}).setdefault(step, []).append((j * st.B, e))
                ivs = [Intervention(st.sites[i], _patcher(st.source[st.sites[i]], by_t, st.axis_pos[i], st.B))
                       for i, by_t in plan.items()]
                logits, _ = forward(model, tile(inputs, len(chunk)), (), ivs)
                raw[chunk] = st.scorer.per_pair(logits)
                report(sub_progress(progress, 0.05, 1.0), (c + 1) / len(chunks))
    report(progress, 1.0)
    return _finish(st, raw, direction, per_element, skipped=len(st.variants) - len(todo))


def _sweep_resumed(model: SiteModel, st: _Setup, todo: list[int], steps: int, states, rows_per_chunk_: int,
                   raw: Tensor, progress: Progress | None) -> None:
    """The variants `todo` as runs resumed from the base run's states (prefix reuse), each only
    for the pairs it changes (the others are the base run: their `raw` stays the base's).
    Fills `raw[v, pair]`."""
    blocks = []  # (start, variant, pairs it changes), in the order they join the resumed runs
    for v in todo:
        i, t, e = st.variants[v]
        blocks.append((max(t, 0), v, _live_pairs(st, i, t, e).nonzero()[:, 0]))
    blocks.sort(key=lambda b: b[0])
    chunks, size = [[]], 0
    for block in blocks:  # chunks of at most the budget's rows (a block is never split)
        if size and size + len(block[2]) > rows_per_chunk_:
            chunks.append([])
            size = 0
        chunks[-1].append(block)
        size += len(block[2])
    for c, chunk in enumerate(chunks):
        plan: dict[int, dict[tuple[int, int | None], list[tuple[Tensor, Tensor]]]] = {}
        first = 0
        for _, v, pairs in chunk:
            i, t, e = st.variants[v]
            positions = torch.arange(first, first + len(pairs))
            for step in (range(steps) if t == ALL_STEPS else (t,)):
                plan.setdefault(i, {}).setdefault((step, e), []).append((positions, pairs))
            first += len(pairs)
        ivs = [Intervention(st.sites[i], _row_patcher(st.source[st.sites[i]], by_step, st.axis_pos[i]))
               for i, by_step in plan.items()]
        logits = resumed_runs(model, st.base_inputs[:, :steps], states, st.base_logits,
                              [b[0] for b in chunk], [b[2] for b in chunk], steps, ivs)
        every = torch.cat([b[2] for b in chunk])
        scores = st.scorer.per_row(logits, every)
        first = 0
        for _, v, pairs in chunk:
            raw[v, pairs] = scores[first:first + len(pairs)]
            first += len(pairs)
        report(sub_progress(progress, 0.05, 1.0), (c + 1) / len(chunks))


def _live_pairs(st: _Setup, i: int, t: int, e: int | None) -> Tensor:
    """`[B]` bool: the pairs whose source value differs from the base value where variant
    (i, t, e) patches (at every step for an all-steps patch): the others it leaves unchanged."""
    name = st.sites[i]
    src, base = st.source[name], st.base_vals[name]
    if t != ALL_STEPS:
        src = _select(src[:, t], st.axis_pos[i], e)
        base = _select(base[:, t], st.axis_pos[i], e)
    return (src != base).reshape(st.B, -1).any(1)


def _row_patcher(src: Tensor, by_step: dict[tuple[int, int | None], list[tuple[Tensor, Tensor]]],
                 axis_pos: int | None):
    """One site's patches for a chunk of resumed runs: at step t, the batch rows `positions`
    take the source run's value of their pairs `pairs` (or one element e of it)."""
    merged: dict[int, list[tuple[Tensor, Tensor, int | None]]] = {}
    for (t, e), entries in by_step.items():
        positions = torch.cat([p for p, _ in entries])
        pairs = torch.cat([q for _, q in entries])
        merged.setdefault(t, []).append((positions, pairs, e))

    def patch(value: Tensor, t: int) -> Tensor:
        entries = merged.get(t)
        if not entries:
            return value
        out = value.clone()
        s_t = fit(src[:, t], value).to(value)  # [B, *shape]
        for positions, pairs, e in entries:
            positions, pairs = positions.to(value.device), pairs.to(value.device)
            if e is None:
                out[positions] = s_t[pairs]
            else:
                idx = (slice(None),) * axis_pos + (e,)
                out[(positions,) + idx] = s_t[(pairs,) + idx]
        return out

    return patch


def _resume_plan(model: SiteModel, st: _Setup, prefix_reuse: bool | None):
    """(steps, base states) for prefix reuse, or None for full passes. A resumed model is causal
    by construction (step s sees steps <= s), so the runs stop after the last scored step; the
    base run, computed step by step up to there, must reproduce the forward pass's outputs."""
    if prefix_reuse is False:
        return None
    all_specs = specs(model)
    growing = [n for n in st.sites if None in all_specs[n].shape]
    why = ("the model has no resume API" if not model.supports_resume else
           f"site(s) {growing} span every earlier step" if growing else "")
    if why:
        if prefix_reuse:
            raise ValueError(f"prefix reuse is not possible here: {why}")
        return None
    steps = st.scorer.last_step + 1
    logits, states = base_run(model, st.base_inputs, steps)
    if torch.allclose(logits, st.base_logits[:, :steps], rtol=1e-4, atol=1e-5):
        return steps, states
    if prefix_reuse:
        raise ValueError("prefix reuse is not possible here: the step-by-step run differs from the forward pass")
    return None


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
        raw = torch.empty(len(st.variants), st.B)
        for v, (i, t, e) in enumerate(st.variants):
            name = st.sites[i]
            spec = all_specs[name]
            elements = None if e is None else element_mask(spec, {per_element: [e]})
            if None in spec.shape:
                src = st.source[name]  # grows with t: a function crops the padded record to the live shape
                value = lambda x, t_, s=src: fit(s[:, t_], x)  # noqa: E731
            else:
                value = st.source[name]
            iv = Intervention(name, value, steps=None if t == ALL_STEPS else [t], elements=elements)
            logits, _ = forward(model, st.base_inputs, (), [iv])
            raw[v] = st.scorer.per_pair(logits)[0]
            report(progress, (v + 1) / len(st.variants))
    return _finish(st, raw, direction, per_element, skipped=0)
