"""The memory-reliance verdict: does the model's behaviour depend on what it reads?

Every memory read (all sites of kind "read") is resample-ablated at once: each
sequence gets the reads of another sequence's clean run (see ablation.py), so the
memory still returns plausible values, just not this input's.

score = the fraction of the gap between the clean metric and chance that this removes,

    score = clip( s * (clean - ablated) / (s * (clean - chance)), 0, 1 ),  s = +1 if higher is better else -1

computed on the means over sequences, with a 95% percentile bootstrap interval over
sequences (the same resampled sequences for clean and ablated). When the clean model
is at chance -- it covers less than AT_CHANCE of the way from chance to a perfect
metric (1 for higher-is-better metrics such as accuracy, 0 for errors such as wrong
bits, unless the task defines `best`), or the pessimistic end of its own 95% bootstrap
interval reaches chance -- there is no gap to lose: the score is 0 (interval [0, 0])
and the output change decides alone.

The output change (runs.output_change: mean absolute change of the output
probabilities, mean KL, share of flipped predictions, over scored positions) is what
keeps the verdict honest where the metric cannot: it is measured on the outputs
themselves, so read weights that look busy but whose reads the output ignores move
nothing and are found decorative, and a model at chance whose outputs do follow its
reads is not.

Verdict (thresholds below, on probability scale):
  decorative  outputs do not move (prob change < STILL and flips < STILL); or the model
              is above chance, the score is below LOW with its upper bound below
              LOW_UPPER, and outputs move less than MOVES (memory could go without
              changing outputs or the metric noticeably);
  functional  the model is above chance and the score is at least HIGH; or it is at
              chance, outputs move by at least MOVES, and memory's share of the
              output change is at least SHARE (the bypass is resample-ablated too, as a
              second block of the same batch: share = change without reads / (change
              without reads + change without bypass));
  partial     anything in between.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models.sites import SiteModel
from ..models.tasks.base import Batch, Task
from .ablation import AblationSpec, run_ablations
from .entropy import normalised_entropy
from .results import Result
from .runs import Progress, forward, report, sub_progress
from .sites import bypass_sites, check_compatible, evaluating, read_sites, slot_weight_sites, specs

AT_CHANCE = 0.1  # clean metric covers < 10% of the way from chance to perfect
STILL = 0.02  # mean |dp| and share of flipped predictions below this: outputs do not move
MOVES = 0.05  # mean |dp| at or above this: outputs clearly move
HIGH = 0.5  # score at or above this: functional
LOW = 0.1  # score below this (and upper bound below LOW_UPPER): no metric depends on memory
LOW_UPPER = 0.25
BUSY_ENTROPY = 0.5  # read weights sharper than this, or moving more than BUSY_MOVE per step, look busy
BUSY_MOVE = 0.1
SHARE = 0.5  # at chance: memory's share of the output change (reads vs bypass ablated) for functional

THRESHOLDS = {"at_chance": AT_CHANCE, "still": STILL, "moves": MOVES, "high": HIGH, "low": LOW,
              "low_upper": LOW_UPPER, "share": SHARE}


@dataclass
class RelianceResult(Result):
    score: float
    ci95: list[float]
    verdict: str  # decorative | functional | partial
    evidence: list[str]
    metric_name: str
    higher_is_better: bool
    metric_clean: float
    metric_ablated: float
    chance: float
    best: float
    progress_from_chance: float  # how far the clean metric is from chance towards best (0..1)
    at_chance: bool
    prob_change: float
    kl: float
    flip_rate: float
    sites: list[str]
    sequences: int
    n_boot: int
    memory_share: float | None = None  # reads' output change / (reads' + bypass's)
    bypass_prob_change: float | None = None  # output change when the bypass is resample-ablated instead
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    metric_clean_per_sequence: Tensor = field(repr=False, default=None)  # type: ignore[assignment]
    metric_ablated_per_sequence: Tensor = field(repr=False, default=None)  # type: ignore[assignment]

    _omit = ("metric_clean_per_sequence", "metric_ablated_per_sequence")


def _best(task: Task) -> float:
    best = getattr(task, "best", None)
    if callable(best):
        best = best()
    if best is not None:
        return float(best)
    return 1.0 if task.higher_is_better else 0.0


def _score(clean: Tensor, ablated: Tensor, chance: float, best: float, sign: float) -> Tensor:
    """Score per bootstrap sample; clean/ablated `[n]` means."""
    gap = sign * (clean - chance)
    full = sign * (best - chance)
    at_chance = gap < AT_CHANCE * abs(full) if full != 0 else gap <= 0
    raw = sign * (clean - ablated) / gap.clamp(min=1e-12)
    return torch.where(at_chance, torch.zeros_like(raw), raw.clamp(0, 1))


def reliance(model: SiteModel, task: Task, batch: Batch, *, n_boot: int = 1000, seed: int = 0,
             progress: Progress | None = None) -> RelianceResult:
    """Score, 95% interval, verdict and evidence lines (see the module doc)."""
    check_compatible(model, task)
    reads = read_sites(model)
    metric_name = task.metric_name or "metric"
    chance = float(task.chance(batch))
    best = _best(task)
    sign = 1.0 if task.higher_is_better else -1.0
    B = batch.mask.shape[0]
    report(progress, 0.0)

    if not reads:
        with evaluating(model):
            logits, _ = forward(model, batch.inputs)
        clean = task.metric(logits, batch).float()
        m = float(clean.mean())
        return RelianceResult(
            score=0.0, ci95=[0.0, 0.0], verdict="decorative",
            evidence=[_metric_line(metric_name, m, chance, best, sign),
                      "the model declares no memory read sites (kind 'read'): nothing it computes comes from an "
                      "external memory, so there is no memory to rely on",
                      "verdict: decorative (no memory)"],
            metric_name=metric_name, higher_is_better=task.higher_is_better, metric_clean=m, metric_ablated=m,
            chance=chance, best=best, progress_from_chance=_progress(m, chance, best, sign),
            at_chance=_progress(m, chance, best, sign) < AT_CHANCE, prob_change=0.0, kl=0.0, flip_rate=0.0,
            sites=[], sequences=B, n_boot=n_boot, metric_clean_per_sequence=clean, metric_ablated_per_sequence=clean)

    if B < 2:
        raise ValueError("reliance needs at least 2 sequences: resample ablation swaps reads between sequences")
    bypass = bypass_sites(model)
    ablations = [AblationSpec(reads, "resample", label="resample every memory read")]
    if bypass:
        ablations.append(AblationSpec(bypass, "resample", label="resample the bypass"))
    results = run_ablations(model, task, batch, ablations, seed=seed, progress=sub_progress(progress, 0.0, 0.7))
    ab = results[0]
    bypass_change = results[1].prob_change if bypass else None
    # of the input dependence the outputs show, how much goes through memory rather than the bypass
    total = ab.prob_change + (bypass_change or 0.0)
    share = ab.prob_change / total if total > 0 else 0.0
    clean, ablated = _per_sequence(task, batch, ab)
    m_clean, m_abl = float(clean.mean()), float(ablated.mean())
    prog = _progress(m_clean, chance, best, sign)
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, B, (n_boot, B), generator=g)
    boot_clean = clean[idx].mean(1)
    # the clean metric's pessimistic 95% end: if it reaches chance, the batch cannot tell the
    # model from one that ignores its input
    worst = float(torch.quantile(boot_clean.double(), 0.025 if sign > 0 else 0.975))
    at_chance = prog < AT_CHANCE or sign * (worst - chance) <= 0
    if at_chance:
        score, lo, hi = 0.0, 0.0, 0.0
    else:
        score = 0.0 + float(_score(torch.tensor([m_clean]), torch.tensor([m_abl]), chance, best, sign)[0])
        boot = _score(boot_clean, ablated[idx].mean(1), chance, best, sign)
        lo, hi = (float(x) for x in torch.quantile(boot.double(), torch.tensor([0.025, 0.975], dtype=torch.double)))
    report(progress, 0.8)

    still = ab.prob_change < STILL and ab.flip_rate < STILL
    verdict = decide(score=score, hi=hi, at_chance=at_chance, prob_change=ab.prob_change,
                     flip_rate=ab.flip_rate, share=share)

    evidence = [
        _metric_line(metric_name, m_clean, chance, best, sign, at_chance),
        f"resample-ablating every memory read ({', '.join(reads)}) gives {metric_name} {m_abl:.4g}: "
        + ("the model is at chance, so the metric has no gap to lose and the output change decides"
           if at_chance else
           f"{100 * score:.0f}% of the gap to chance is lost (95% CI {100 * lo:.0f}-{100 * hi:.0f}%, "
           f"{B} sequences, {n_boot} bootstrap samples)"),
        f"outputs change by {ab.prob_change:.3f} in probability on average (KL {ab.kl:.3g} nats), "
        f"{100 * ab.flip_rate:.1f}% of predictions flip"
        + (": the outputs do not depend on what is read" if still else ""),
    ]
    if bypass:
        evidence.append(f"resample-ablating the bypass ({', '.join(bypass)}) instead changes outputs by "
                        f"{bypass_change:.3f}: memory carries {100 * share:.0f}% of the outputs' dependence on "
                        "this input's values")
    described, busy = _read_weights(model, batch)
    if busy and still:
        evidence.append(described + ": busy addressing, yet the outputs ignore what is read")
    elif described:
        evidence.append(described)
    evidence.append(_verdict_line(verdict, still, at_chance, score, ab.prob_change))
    report(progress, 1.0)
    return RelianceResult(
        score=score, ci95=[lo, hi], verdict=verdict, evidence=evidence, metric_name=metric_name,
        higher_is_better=task.higher_is_better, metric_clean=m_clean, metric_ablated=m_abl, chance=chance, best=best,
        progress_from_chance=prog, at_chance=at_chance, prob_change=ab.prob_change, kl=ab.kl,
        flip_rate=ab.flip_rate, sites=reads, sequences=B, n_boot=n_boot, memory_share=share,
        bypass_prob_change=bypass_change, metric_clean_per_sequence=clean,
        metric_ablated_per_sequence=ablated)


def decide(*, score: float, hi: float, at_chance: bool, prob_change: float, flip_rate: float,
           share: float) -> str:
    """The verdict rules of the module doc, on the measured numbers."""
    if prob_change < STILL and flip_rate < STILL:
        return "decorative"
    if at_chance:
        return "functional" if prob_change >= MOVES and share >= SHARE else "partial"
    if score >= HIGH:
        return "functional"
    if score < LOW and hi < LOW_UPPER and prob_change < MOVES:
        return "decorative"
    return "partial"


def _per_sequence(task: Task, batch: Batch, ab) -> tuple[Tensor, Tensor]:
    return ab.metric_clean_per_sequence.float(), ab.metric_per_sequence.float()


def _progress(m: float, chance: float, best: float, sign: float) -> float:
    full = sign * (best - chance)
    if full <= 0:
        return 0.0
    return max(0.0, min(1.0, sign * (m - chance) / full))


def _metric_line(name: str, m: float, chance: float, best: float, sign: float, at_chance: bool | None = None) -> str:
    direction = "higher" if sign > 0 else "lower"
    prog = _progress(m, chance, best, sign)
    at_chance = prog < AT_CHANCE if at_chance is None else at_chance
    state = ("is at chance" if at_chance else "solves the task" if prog > 0.95 else "is above chance")
    return (f"clean {name} {m:.4g} vs chance {chance:.4g} and perfect {best:.4g} ({direction} is better): "
            f"the model {state} ({100 * prog:.0f}% of the way from chance to perfect)")


def _read_weights(model: SiteModel, batch: Batch) -> tuple[str, bool]:
    """A line describing the read weightings, when the model has any (how sharp they are,
    how much they move from step to step), and whether they look busy: focused
    (normalised entropy below BUSY_ENTROPY) or moving (total variation between successive
    steps above BUSY_MOVE)."""
    sites = [n for n in slot_weight_sites(model) if specs(model)[n].kind == "read_weights"]
    if not sites:
        return "", False
    with evaluating(model):
        _, vals = forward(model, batch.inputs, sites)
    parts, busy = [], False
    for n in sites:
        w = vals[n].float()
        h, _, _ = normalised_entropy(w, w.shape[-1])
        move = float(0.5 * (w[:, 1:] - w[:, :-1]).abs().sum(-1).mean()) if w.shape[1] > 1 else 0.0
        mean_h = float(torch.nanmean(h))
        busy = busy or mean_h < BUSY_ENTROPY or move > BUSY_MOVE
        parts.append(f"{n} have mean normalised entropy {mean_h:.2f} and move by {move:.2f} "
                     "(total variation) from step to step")
    return "read weights: " + "; ".join(parts), busy


def _verdict_line(verdict: str, still: bool, at_chance: bool, score: float, prob: float) -> str:
    if verdict == "decorative" and still:
        why = "removing what memory returns leaves the outputs unchanged"
    elif verdict == "decorative":
        why = f"the metric keeps {100 * (1 - score):.0f}% of its gap to chance and outputs barely move"
    elif at_chance:
        why = ("the model is at chance, but its outputs follow what it reads more than the bypass"
               if verdict == "functional" else
               "the model is at chance; its outputs move without its reads, but little or less than without the bypass")
    elif verdict == "functional":
        why = "the task performance depends on what memory returns"
    else:
        why = "memory matters for part of the behaviour, the bypass carries the rest"
    return f"verdict: {verdict} ({why})"
