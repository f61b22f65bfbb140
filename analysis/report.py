"""`analyze`: every analysis of one model on one task, as one JSON-able report with a short
text rendering. This is what `mnemoscope analyze` prints and what the server serves.

One batch of `samples` sequences (`task.sample(samples, seed)`) feeds the trace, the
reliance design (whose removals, first donor assignment, are the report's ablations),
entropy, gradient flow and utilization; activation
patching uses `PATCH_PAIRS` clean/corrupted pairs
(`task.patch_pairs(n, seed + 1)`) and sweeps the read and bypass
sites over every timestep in both directions (denoise: `patching`, noise:
`patching_noise`), each cell with a 95% bootstrap interval over pairs, the all-steps patch
per site, and the sweep aligned to each pair's corrupted item and answer
(analysis/patching.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..models.sites import SiteModel
from ..models.tasks.base import Task
from .ablation import AblationResult, AblationSpec, run_ablations
from .entropy import EntropyResult, weight_entropy
from .gradients import GradientResult, gradient_flow
from .patching import PatchingResult, patch_sweep
from .reliance import RelianceResult, reliance
from .results import Result, jsonable
from .runs import Progress, report, sub_progress
from .sites import bypass_sites, check_compatible, read_sites, specs
from .trace import run_trace
from .utilization import UtilizationResult, utilization

PATCH_PAIRS = 16  # at least this many pairs, whatever `samples` is

# (stage, share of the progress bar)
_STAGES = (("trace", 0.05), ("reliance", 0.15), ("ablation", 0.2), ("patching", 0.35), ("entropy", 0.05),
           ("gradients", 0.1), ("utilization", 0.1))


@dataclass
class Report(Result):
    model: dict
    task: dict
    samples: int
    seed: int
    metric: dict
    reliance: RelianceResult
    ablation: list[AblationResult]
    patching: PatchingResult | None
    patching_note: str
    entropy: EntropyResult
    gradients: GradientResult
    utilization: UtilizationResult
    timings: dict[str, float] = field(default_factory=dict)
    patching_noise: PatchingResult | None = None  # the same sweep, noising (the clean run patched)

    def to_dict(self) -> dict:
        d = {
            "model": jsonable(self.model),
            "task": jsonable(self.task),
            "samples": self.samples,
            "seed": self.seed,
            "metric": jsonable(self.metric),
            "reliance": self.reliance.to_dict(),
            "ablation": [_ablation_dict(a) for a in self.ablation],
            "patching": {**_patching_dict(self.patching, self.patching_note),
                         "noise": _patching_dict(self.patching_noise, self.patching_note)},
            "entropy": self.entropy.to_dict(),
            "gradients": self.gradients.to_dict(),
            "utilization": self.utilization.to_dict(),
            "timings": jsonable(self.timings),
        }
        return d

    def to_text(self) -> str:
        return render_text(self)

    def __str__(self) -> str:
        return self.to_text()


def _ablation_dict(a: AblationResult) -> dict:
    d = a.to_dict()
    d.pop("metric_per_sequence", None)
    d.pop("metric_clean_per_sequence", None)
    return d


def _patching_dict(p: PatchingResult | None, note: str) -> dict:
    if p is None:
        return {"summary": None, "note": note}
    return {"summary": jsonable(p.summary()), "sites": p.sites, "steps": p.steps, "direction": p.direction,
            "scores": jsonable(p.scores), "note": p.note or note, "pairs": p.pairs,
            "ci95": jsonable(p.ci95), "all_steps": jsonable(p.all_steps),
            "all_steps_ci95": jsonable(p.all_steps_ci95), "aligned": jsonable(p.aligned)}


def default_ablations(model: SiteModel) -> list[AblationSpec]:
    """Each memory site alone, when there are several (the design removes them together)."""
    reads = read_sites(model)
    return [AblationSpec([r], "resample") for r in reads] if len(reads) > 1 else []


def analyze(model: SiteModel, task: Task, *, samples: int = 32, seed: int = 0,
            progress: Progress | None = None) -> Report:
    """Run every analysis on `samples` sequences of `task` (see the module doc)."""
    check_compatible(model, task)
    if samples < 2:
        raise ValueError(f"analyze needs at least 2 samples (resample ablation swaps sequences), got {samples}")
    batch = task.sample(samples, seed)
    timings: dict[str, float] = {}
    bounds, start = {}, 0.0
    for name, share in _STAGES:
        bounds[name] = (start, start + share)
        start += share

    def stage(name):
        return sub_progress(progress, *bounds[name])

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        return out

    report(progress, 0.0)
    trace = timed("trace", lambda: run_trace(model, task, batch, progress=stage("trace")))
    rel = timed("reliance", lambda: reliance(model, task, batch, seed=seed, progress=stage("reliance")))
    abl = rel.ablations + timed("ablation", lambda: run_ablations(model, task, batch, default_ablations(model),
                                                                  seed=seed, progress=stage("ablation")))
    patch_sites = read_sites(model) + bypass_sites(model)
    patching = noising = None
    note = ""
    if patch_sites:
        pair = task.patch_pairs(PATCH_PAIRS, seed + 1)
        lo, hi = bounds["patching"]
        try:
            patching = timed("patching", lambda: patch_sweep(model, task, pair, patch_sites,
                                                             progress=sub_progress(progress, lo, (lo + hi) / 2)))
            noising = timed("patching_noise", lambda: patch_sweep(
                model, task, pair, patch_sites, direction="noise", progress=sub_progress(progress, (lo + hi) / 2, hi)))
        except ValueError as exc:  # e.g. pairs whose answers never differ
            note = str(exc)
    else:
        note = "the model has no read or bypass sites to patch"
    ent = timed("entropy", lambda: weight_entropy(model, task, batch, progress=stage("entropy")))
    grads = timed("gradients", lambda: gradient_flow(model, task, batch, progress=stage("gradients")))
    util = timed("utilization", lambda: utilization(model, task, batch, progress=stage("utilization")))
    report(progress, 1.0)
    return Report(
        model={"arch": model.arch, "config": model.config_dict(),
               "parameters": sum(p.numel() for p in model.parameters()),
               "sites": [s.to_dict() for s in specs(model).values()]},
        task=task.spec(),
        samples=samples,
        seed=seed,
        metric={"name": trace.metric_name, "clean": trace.metric, "chance": trace.chance,
                "higher_is_better": trace.higher_is_better, "best": rel.best, "loss": trace.loss,
                "steps": trace.steps},
        reliance=rel,
        ablation=abl,
        patching=patching,
        patching_note=note,
        patching_noise=noising,
        entropy=ent,
        gradients=grads,
        utilization=util,
        timings=timings,
    )


def _f(x, digits: int = 3) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:.{digits}g}"


def render_text(r: Report) -> str:
    m, rel = r.metric, r.reliance
    better = "higher" if m["higher_is_better"] else "lower"
    lines = [
        f"mnemoscope analysis: {r.model['arch']} on {r.task['name']} ({r.samples} sequences, seed {r.seed})",
        f"metric: {m['name']} {_f(m['clean'], 4)} (chance {_f(m['chance'], 4)}, {better} is better)",
        f"memory reliance: {rel.verdict.upper()}  necessity {rel.score:.2f} (95% CI {rel.ci95[0]:.2f}-"
        f"{rel.ci95[1]:.2f}), stability {100 * rel.stability:.0f}%",
    ]
    lines += [f"  ! {w['code']}: {w['message']}" for w in rel.warnings]
    lines += [f"  - {e}" for e in rel.evidence]
    if r.ablation:
        lines.append("ablations (vs clean):")
        width = max(len(a.label) for a in r.ablation)
        for a in r.ablation:
            lines.append(f"  {a.label:<{width}}  {a.metric_name} {_f(a.metric, 4)} ({a.metric_delta:+.3g})  "
                         f"dp {a.prob_change:.3f}  KL {_f(a.kl)}  flips {100 * a.flip_rate:.1f}%")
    for p in (r.patching, r.patching_noise):
        if p is None:
            continue
        lines.append(f"activation patching ({p.direction}, {p.pairs} pairs, recovery of the clean answer, "
                     f"95% CI over pairs):")
        for name, s in p.summary()["sites"].items():
            ext = "min" if p.direction == "noise" else "max"  # noising: where the answer needs the site
            ci = s.get(f"ci95_at_{ext}")
            at = f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else ""
            whole = (f"; all steps at once {_f(s['all_steps'])} [{_f(s['all_steps_ci95'][0])}, "
                     f"{_f(s['all_steps_ci95'][1])}]") if s.get("all_steps") is not None else ""
            lines.append(f"  {name}: {ext} {_f(s.get(ext))}{at} at t={s.get('t_' + ext)}, "
                         f"mean over time {_f(s['mean'])}{whole}")
            for anchor, view in (p.aligned or {}).items():
                row = view["scores"][p.sites.index(name)]
                if torch.isfinite(row).any():
                    fill = float("inf") if ext == "min" else -float("inf")
                    pick = torch.nan_to_num(row, nan=fill)
                    k = int(pick.argmin() if ext == "min" else pick.argmax())
                    lines.append(f"    aligned to the {'corrupted item' if anchor == 'item' else 'answer'}: "
                                 f"{ext} {_f(float(row[k]))} at offset {view['offsets'][k]:+d}")
        if p.note:
            lines.append(f"  note: {p.note}")
    if r.patching is None and r.patching_note:
        lines.append(f"activation patching: skipped ({r.patching_note})")
    if r.entropy.sites:
        lines.append("addressing entropy (normalised, 0 sharp .. 1 uniform):")
        for s in r.entropy.sites:
            n = f"of {s.support}" if s.support else "of the visible keys"
            lines.append(f"  {s.name}: {s.label}, mean {_f(s.mean, 2)} (~{_f(s.effective_support)} effective {n})")
    g = r.gradients
    if g.attribution:
        lines.append("gradient x activation (first-order loss change if the component were mean-ablated; "
                     "invariant to rescaling a path):")
        lines.append("  " + ", ".join(f"{c} {_f(v)}" for c, v in g.attribution.items())
                     + (f"; memory's share {_f(g.attribution_share, 2)}" if g.attribution_share is not None else ""))
    lines.append("gradient flow (L2 norm of d loss / d parameters; diagnostic, changes when a path is rescaled):")
    lines.append("  " + ", ".join(f"{x.name} {_f(x.grad_norm)}" for x in g.groups))
    if g.ratio is not None:
        lines.append(f"  memory reads / bypass gradient-norm ratio (diagnostic): {_f(g.ratio)}")
    u = r.utilization
    if u.slots or u.states or u.interference:
        lines.append("utilization:")
    for s in u.slots:
        lines.append(f"  {s.name}: {_f(s.effective_slots)} effective slots of {s.slots}, "
                     f"{len(s.untouched)} never touched")
    for s in u.states:
        rank = f", effective rank {_f(s.mean_effective_rank)} of {s.max_rank}" if s.max_rank else ""
        distinct = (f", at most {_f(s.distinct)} distinct {s.distinct_axis}s of {s.distinct_of}"
                    + (" (collapsed)" if s.collapsed else "")) if s.distinct_axis else ""
        lines.append(f"  {s.name}: mean norm {_f(s.mean_norm)}{rank}{distinct}")
    for s in u.interference:
        lines.append(f"  {s.name}: successive writes mean |cos| {_f(s.mean, 2)}")
    return "\n".join(lines)
