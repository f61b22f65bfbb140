"""The memory-reliance verdict: is memory needed, is it enough, and which path does the
output follow when memory and the bypass disagree?

Components (declared by each model as `SiteSpec.role`, see analysis/sites.py):
  memory  memory's whole contribution (NTM/DNC: the reads, which feed the output and
          the controller; a linear-memory block's output; an SSM's read y = C h);
  bypass  the paths parallel to memory only (a controller's direct path to the output,
          local attention, the SSM's D skip); paths in series after memory (MLPs) are
          not bypass, and a pure memory stack has none;
  state   a recurrent controller's own state (h, c), reported on its own: removing it
          also breaks memory's addressing, so "bypass removed" never means "state removed".

The factorial design: remove memory, the bypass, both, and the state, each by
  mean      the removal: every value replaced by its mean over the batch at positions of
            the same role (ablation.py's alignment);
  zero      a second removal, which can push values out of their range;
  resample  the conflict test: each sequence gets another's values (DONOR_DRAWS
            donor assignments).
From the metric of each run (mean over sequences; gap = clean - chance, signed so that
larger is better):
  necessity(X)    = (clean - without X) / gap, clipped to [0, 1], mean mode: the share of
                    the gap lost when X is removed;
  sufficiency(M)  = (without the bypass - chance) / gap, clipped: the share kept when only
                    memory remains; sufficiency(bypass) the same with memory removed;
  joint           = necessity of memory and bypass removed together;
  conflict        = necessity under resample-ablation of memory (the earlier score);
  per_position    = the share of scored positions with a gap of their own that lose at
                    least half of it when memory is removed (sparse use shows here);
  layers          = per layer, for models with per-layer sites (`layers.{i}.<kind>.out`:
                    Hugging Face hybrids, sequence stacks): the necessity of that one
                    layer's memory or bypass site alone, mean mode; a layer whose lower
                    bound reaches HIGH is one the task needs, and the evidence names it.
Each comes with a 95% percentile interval from a bootstrap that resamples sequences and
donor assignments and re-decides the whole verdict per sample; `stability` is the share
of samples whose verdict equals the reported one.

Verdicts, decided on interval bounds (`decide`), in this order:
  undetermined  the clean model is at chance or too close to it (AT_CHANCE, or its own
                pessimistic bound reaches chance): there is no gap to measure, unless
                removing memory moves no output at all (then decorative);
  decorative    removing memory (any mode) moves no output: nothing reads the memory;
  functional    memory is necessary: necessity's lower bound >= HIGH;
  redundant     removing both memory and the bypass loses the task (joint lower bound >=
                HIGH) and either each is sufficient (both lower bounds >= HIGH) or neither
                is necessary (upper bounds < HIGH): either path alone does the task;
  decorative    memory is neither necessary nor sufficient (upper bounds < LOW), outputs
                barely move without it (< MOVES) and no share of positions depends on it
                (per_position upper bound < SPARSE);
  partial       the rest; the evidence says which part memory carries.
`score` is memory's necessity; `ci95` its interval.

Warnings (`warnings`: {code, message}): at_chance, collapsed_memory (every slot or head
holds the same state), ablation_modes_disagree (one mode finds memory necessary, another
finds it not), sparse_use (memory decides a share of positions, not the whole metric),
unstable (stability below STABLE).

Calibration: `decide(...)` takes precomputed numbers (floats or `Estimate`s), so a control
suite can check the rules and tune THRESHOLDS. Controls per family (NTM, DNC, linear
memory, SSM, hybrid), truth known by construction: untrained (-> undetermined);
decorative (trained with the read path cut from the output: zeroed fc/head columns or a
zeroed memory-block output, addressing still busy); functional (trained with the bypass
cut); redundant (trained with reads and bypass each dropped in a share of batches, so
that each alone solves the task); sparse (a task where memory is needed at a few
positions only); collapsed (NTM and DNC with constant memory init and zero initial
weightings).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models.sites import SiteModel
from ..models.tasks.base import Batch, Task
from .ablation import AblationResult, AblationSpec, run_ablations
from .entropy import normalised_entropy
from .layers import layer_parts
from .results import Result
from .runs import Progress, forward, output_change, report, sub_progress
from .sites import check_compatible, components, evaluating, slot_weight_sites, specs
from .utilization import COLLAPSED, collapse_check

# Thresholds, declared once; the calibration step tunes them on control models (seed 0).
AT_CHANCE = 0.1  # the clean metric covers less than this share of the way from chance to perfect: at chance
STILL = 0.02  # removing memory changes output probabilities and flips less than this (upper bounds): nothing moves
MOVES = 0.05  # mean |dp| when memory is removed at or above this: outputs clearly move
HIGH = 0.5  # necessity / sufficiency lower bound at or above this: necessary / sufficient
LOW = 0.25  # necessity / sufficiency upper bound below this: not necessary / not sufficient
SPARSE = 0.05  # share of positions that lose half their gap without memory (lower bound) at or above this: sparse use
STABLE = 0.8  # verdict stability below this: unstable
BUSY_ENTROPY = 0.5  # read weights sharper than this, or moving more than BUSY_MOVE per step, look busy
BUSY_MOVE = 0.1
DONOR_DRAWS = 4  # donor assignments for resample ablation

THRESHOLDS = {"at_chance": AT_CHANCE, "still": STILL, "moves": MOVES, "high": HIGH, "low": LOW,
              "sparse": SPARSE, "stable": STABLE, "collapsed": COLLAPSED}
VERDICTS = ("undetermined", "decorative", "functional", "redundant", "partial")
REMOVALS = ("memory", "bypass", "both", "state")  # what the design removes, in this order
MODES = ("mean", "zero", "resample")


@dataclass
class Estimate:
    """A number with its 95% interval; `mode` says which ablation measured it."""

    value: float
    lo: float
    hi: float
    mode: str = "mean"

    @classmethod
    def of(cls, x: "Estimate | float | None") -> "Estimate | None":
        if x is None or isinstance(x, Estimate):
            return x
        return cls(float(x), float(x), float(x))

    def to_dict(self) -> dict:
        return {"value": self.value, "ci95": [self.lo, self.hi], "mode": self.mode}


@dataclass
class RelianceResult(Result):
    score: float  # memory's necessity
    ci95: list[float]
    verdict: str  # undetermined | decorative | functional | redundant | partial
    evidence: list[str]
    metric_name: str
    higher_is_better: bool
    metric_clean: float
    metric_ablated: float  # memory removed (mean)
    chance: float
    best: float
    progress_from_chance: float  # how far the clean metric is from chance towards best (0..1)
    at_chance: bool
    prob_change: float  # output change when memory is removed (mean)
    kl: float
    flip_rate: float
    sites: list[str]  # memory's sites
    sequences: int
    n_boot: int
    necessity: dict | None = None  # memory's: {value, ci95, mode}
    sufficiency: dict | None = None
    components: dict = field(default_factory=dict)  # {memory, bypass, state}: {necessity, sufficiency} or None
    joint_necessity: dict | None = None  # memory and bypass removed together
    conflict: dict | None = None  # resample-ablation of memory
    per_position: dict | None = None
    stability: float = 1.0
    warnings: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)  # per layer part: {layer, kind, site, role, necessity, needed}
    removals: list[dict] = field(default_factory=list)  # every run of the design: component, mode, metric, output change
    component_sites: dict = field(default_factory=dict)
    memory_share: float | None = None  # output change without memory / (without memory + without bypass), mean mode
    bypass_prob_change: float | None = None  # output change when the bypass is removed (mean)
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    metric_clean_per_sequence: Tensor = field(repr=False, default=None)  # type: ignore[assignment]
    metric_ablated_per_sequence: Tensor = field(repr=False, default=None)  # type: ignore[assignment]
    ablations: list[AblationResult] = field(repr=False, default_factory=list)

    _omit = ("metric_clean_per_sequence", "metric_ablated_per_sequence", "ablations")


def _best(task: Task) -> float:
    best = getattr(task, "best", None)
    if callable(best):
        best = best()
    if best is not None:
        return float(best)
    return 1.0 if task.higher_is_better else 0.0


# -- the rules ------------------------------------------------------------------------------

def decide(*, at_chance: bool, necessity, sufficiency=None, bypass_necessity=None, bypass_sufficiency=None,
           joint_necessity=None, per_position=None, moves=0.0, still: bool = False) -> tuple[str, str]:
    """The verdict and a short reason, from precomputed numbers (the module doc's rules).

    Each quantity is an `Estimate` (decided on its bounds) or a float (value = both
    bounds); None where the model has no such component. `moves`: output change when
    memory is removed (mean mode); `still`: removing memory in every mode leaves the
    outputs unchanged (changes and flips below STILL)."""
    nec, suf = Estimate.of(necessity), Estimate.of(sufficiency)
    bnec, bsuf, joint = Estimate.of(bypass_necessity), Estimate.of(bypass_sufficiency), Estimate.of(joint_necessity)
    pos, mv = Estimate.of(per_position), Estimate.of(moves)
    if at_chance:
        if still:
            return "decorative", "the model is at chance and removing memory moves no output: nothing reads the memory"
        return "undetermined", ("the model is at chance or too close to it: there is no gap to chance to lose, so "
                                "neither memory nor the bypass can be shown necessary")
    if still:
        return "decorative", "removing memory leaves every output unchanged: nothing reads the memory"
    if nec.lo >= HIGH:
        return "functional", "memory is necessary: removing it loses most of the gap to chance"
    if (suf is not None and bsuf is not None and suf.lo >= HIGH and bsuf.lo >= HIGH
            and (joint is None or joint.lo >= HIGH)):
        return "redundant", ("memory alone and the bypass alone each keep most of the gap, and removing both loses "
                             "it: either path does the task")
    if (bnec is not None and joint is not None and nec.hi < HIGH and bnec.hi < HIGH and joint.lo >= HIGH):
        return "redundant", ("neither memory nor the bypass is necessary on its own, but removing both loses the "
                             "task: each path stands in for the other")
    if (nec.hi < LOW and (suf is None or suf.hi < LOW) and mv.hi < MOVES
            and (pos is None or pos.hi < SPARSE)):
        return "decorative", "memory is neither necessary nor sufficient and outputs barely move without it"
    if pos is not None and pos.lo >= SPARSE and nec.lo < HIGH:
        return "partial", "memory decides some positions (sparse use) but not the task as a whole"
    return "partial", "memory carries part of the behaviour, the rest does not depend on it"


# -- measuring ------------------------------------------------------------------------------

@dataclass
class _Run:
    """One ablation's per-sequence numbers."""

    component: str
    mode: str
    draw: int
    result: AblationResult
    metric: Tensor  # [B]
    prob: Tensor  # [B] mean |dp| over scored positions
    flips: Tensor  # [B]
    position_lost: Tensor | None = None  # [B] scored positions that lose half their own gap
    position_count: Tensor | None = None  # [B] scored positions with a gap of their own
    lost_per_step: Tensor | None = None  # [T] those positions, summed over sequences


def _per_row_change(task: Task, clean_logits: Tensor, logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    change = output_change(task, clean_logits, logits)
    m = mask.float()
    n = m.sum(1).clamp(min=1)
    return (change.prob_change * m).sum(1) / n, (change.flips * m).sum(1) / n


def _position_loss(task: Task, batch: Batch, clean_logits: Tensor, logits: Tensor, chance_rows: Tensor,
                   sign: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per sequence: scored positions with a gap of their own, and those that lose at
    least half of it. A position's chance is its sequence's chance over its scored
    positions (metric_per_step is on that scale)."""
    clean = task.metric_per_step(clean_logits, batch).float()
    abl = task.metric_per_step(logits, batch).float()
    n = batch.mask.sum(1).clamp(min=1).float()
    chance_p = (chance_rows / n)[:, None]
    gap = sign * (clean - chance_p)
    has_gap = batch.mask & (gap > 1e-9)
    lost = has_gap & (sign * (clean - abl) >= 0.5 * gap)
    return lost.sum(1).float(), has_gap.sum(1).float(), lost.sum(0).float()


def _row_chance(task: Task, batch: Batch) -> Tensor:
    """`[B]` chance of each sequence (tasks whose chance grows with the length)."""
    return torch.tensor([float(task.chance(batch.select([i]))) for i in range(batch.mask.shape[0])])


def reliance(model: SiteModel, task: Task, batch: Batch, *, n_boot: int = 1000, seed: int = 0,
             draws: int = DONOR_DRAWS, progress: Progress | None = None) -> RelianceResult:
    """The factorial design, its estimates and intervals, the verdict, warnings and
    evidence lines (see the module doc)."""
    check_compatible(model, task)
    comp = components(model)
    metric_name = task.metric_name or "metric"
    chance = float(task.chance(batch))
    best = _best(task)
    sign = 1.0 if task.higher_is_better else -1.0
    B = batch.mask.shape[0]
    report(progress, 0.0)
    with evaluating(model):
        clean_logits, _ = forward(model, batch.inputs)
    clean = task.metric(clean_logits, batch).float()
    m_clean = float(clean.mean())
    prog = _progress(m_clean, chance, best, sign)

    if not comp["memory"]:
        return RelianceResult(
            score=0.0, ci95=[0.0, 0.0], verdict="decorative",
            evidence=[_metric_line(metric_name, m_clean, chance, best, sign),
                      "the model declares no memory sites (role 'memory'): nothing it computes comes from an "
                      "external memory, so there is no memory to rely on",
                      "verdict: decorative (no memory)"],
            metric_name=metric_name, higher_is_better=task.higher_is_better, metric_clean=m_clean,
            metric_ablated=m_clean, chance=chance, best=best, progress_from_chance=prog, at_chance=prog < AT_CHANCE,
            prob_change=0.0, kl=0.0, flip_rate=0.0, sites=[], sequences=B, n_boot=n_boot,
            components={"memory": None, "bypass": None, "state": None}, component_sites=comp,
            metric_clean_per_sequence=clean, metric_ablated_per_sequence=clean)
    if B < 2:
        raise ValueError("reliance needs at least 2 sequences: resample ablation swaps values between sequences")

    removed = {"memory": comp["memory"], "bypass": comp["bypass"],
               "both": comp["memory"] + comp["bypass"] if comp["bypass"] else [], "state": comp["state"]}
    removed = {k: v for k, v in removed.items() if v}
    # one layer at a time (a model with a single layer part has nothing to split)
    parts = layer_parts(model)
    parts = parts if len(parts) > 1 else []
    # a layer that is the whole of memory or of the bypass reuses that removal's run
    existing = {tuple(sites): k for k, sites in removed.items()}
    layer_runs = {p.site: existing.get((p.site,), _layer_component(p.site)) for p in parts}
    removed.update({k: [site] for site, k in layer_runs.items() if k not in removed})
    chance_rows = _row_chance(task, batch)
    runs: list[_Run] = []
    # every removal by mean; memory and the bypass also zeroed and resampled (the bypass with
    # one donor assignment: only memory's conflict enters the verdict, so only it gets several)
    by_seed: dict[int, list[tuple[str, str]]] = {0: [(k, "mean") for k in removed]}
    by_seed[0] += [(k, mode) for mode in ("zero", "resample") for k in ("memory", "bypass") if k in removed]
    for d in range(1, draws):
        by_seed[d] = [("memory", "resample")]
    for i, (d, todo) in enumerate(sorted(by_seed.items())):
        specs_ = [AblationSpec(removed[k], mode, label=f"{mode} {k}" + (f" (donors {d})" if mode == "resample" else ""))
                  for k, mode in todo]
        results = run_ablations(model, task, batch, specs_, seed=seed + d,
                                progress=sub_progress(progress, 0.8 * i / len(by_seed), 0.8 * (i + 1) / len(by_seed)))
        for (k, mode), res in zip(todo, results):
            prob, flips = _per_row_change(task, clean_logits, res.logits, batch.mask)
            run = _Run(k, mode, d, res, res.metric_per_sequence.float(), prob, flips)
            if k == "memory" and mode == "mean":
                run.position_lost, run.position_count, run.lost_per_step = _position_loss(
                    task, batch, clean_logits, res.logits, chance_rows, sign)
            runs.append(run)

    est = _Estimator(runs, clean, chance_rows, best, sign, n_boot, draws, seed)
    numbers = est.numbers()
    report(progress, 0.85)

    described, busy, uniform_static = _read_weights(model, batch)
    collapse = collapse_check(model, batch)
    verdict, reason = decide(**numbers.decide_args())
    stability = est.stability(verdict)
    warnings = _warnings(numbers, stability, collapse, uniform_static, est, batch)
    if verdict == "partial" and any(w["code"] == "sparse_use" for w in warnings):
        reason = "memory decides some positions (sparse use: see the warning) but not the task as a whole"

    mem_mean = est.run("memory", "mean")
    byp_mean = est.run("bypass", "mean") if "bypass" in removed else None
    share = None
    if byp_mean is not None:
        total = mem_mean.result.prob_change + byp_mean.result.prob_change
        share = mem_mean.result.prob_change / total if total > 0 else 0.0
    evidence = _evidence(numbers, est, metric_name, chance, best, sign, m_clean, removed, B, n_boot, draws)
    layers = [{**p.to_dict(), "necessity": est.interval(layer_runs[p.site]).to_dict()} for p in parts]
    for row in layers:
        row["needed"] = bool(row["necessity"]["ci95"][0] >= HIGH and not numbers.at_chance)
    if layers:
        evidence.append(_layer_line(layers))
    if described:
        evidence.append(described + (": busy addressing, yet removing the reads moves no output"
                                     if busy and numbers.still else ""))
    evidence.append(f"verdict: {verdict} ({reason}); the same verdict in {100 * stability:.0f}% of "
                    f"{n_boot} bootstrap samples")
    report(progress, 1.0)
    return RelianceResult(
        score=numbers.necessity.value, ci95=[numbers.necessity.lo, numbers.necessity.hi], verdict=verdict,
        evidence=evidence, metric_name=metric_name, higher_is_better=task.higher_is_better, metric_clean=m_clean,
        metric_ablated=mem_mean.result.metric, chance=chance, best=best, progress_from_chance=prog,
        at_chance=numbers.at_chance, prob_change=mem_mean.result.prob_change, kl=mem_mean.result.kl,
        flip_rate=mem_mean.result.flip_rate, sites=comp["memory"], sequences=B, n_boot=n_boot,
        necessity=numbers.necessity.to_dict(), sufficiency=_d(numbers.sufficiency),
        components=numbers.components(), joint_necessity=_d(numbers.joint), conflict=numbers.conflict.to_dict(),
        per_position=numbers.per_position_dict(est, batch), stability=stability, warnings=warnings, layers=layers,
        removals=[{"component": r.component, "mode": r.mode, "draw": r.draw, "sites": removed[r.component],
                   "metric": r.result.metric, "prob_change": r.result.prob_change, "flip_rate": r.result.flip_rate}
                  for r in runs],
        component_sites=comp, memory_share=share,
        bypass_prob_change=byp_mean.result.prob_change if byp_mean is not None else None,
        metric_clean_per_sequence=clean, metric_ablated_per_sequence=mem_mean.metric,
        ablations=[r.result for r in runs if r.draw == 0])


def _d(e: Estimate | None) -> dict | None:
    return None if e is None else e.to_dict()


@dataclass
class _Numbers:
    at_chance: bool
    still: bool
    necessity: Estimate
    sufficiency: Estimate | None
    bypass_necessity: Estimate | None
    bypass_sufficiency: Estimate | None
    joint: Estimate | None
    state_necessity: Estimate | None
    conflict: Estimate
    zero_necessity: Estimate
    per_position: Estimate | None
    moves: Estimate

    def decide_args(self) -> dict:
        return dict(at_chance=self.at_chance, still=self.still, necessity=self.necessity,
                    sufficiency=self.sufficiency, bypass_necessity=self.bypass_necessity,
                    bypass_sufficiency=self.bypass_sufficiency, joint_necessity=self.joint,
                    per_position=self.per_position, moves=self.moves)

    def components(self) -> dict:
        out = {"memory": {"necessity": _d(self.necessity), "sufficiency": _d(self.sufficiency)},
               "bypass": None, "state": None}
        if self.bypass_necessity is not None:
            out["bypass"] = {"necessity": _d(self.bypass_necessity), "sufficiency": _d(self.bypass_sufficiency)}
        if self.state_necessity is not None:
            # the state reaches the output only through memory and the bypass: no "state alone" run
            out["state"] = {"necessity": _d(self.state_necessity), "sufficiency": None}
        return out

    def per_position_dict(self, est: "_Estimator", batch: Batch) -> dict | None:
        if self.per_position is None:
            return None
        return {**self.per_position.to_dict(), "positions": int(est.run("memory", "mean").position_count.sum()),
                "steps": est.sparse_steps()}


class _Estimator:
    """Point estimates over all sequences (resample: mean over donor draws) and bootstrap
    samples over sequences and donor draws, vectorised; re-decides the verdict per sample."""

    def __init__(self, runs: list[_Run], clean: Tensor, chance_rows: Tensor, best: float, sign: float,
                 n_boot: int, draws: int, seed: int):
        self.runs, self.clean, self.chance_rows, self.best, self.sign = runs, clean, chance_rows, best, sign
        self.n_boot, self.draws = n_boot, draws
        B = clean.shape[0]
        g = torch.Generator().manual_seed(int(seed))
        self.idx = torch.randint(0, B, (n_boot, B), generator=g)
        self.draw = torch.randint(0, draws, (n_boot,), generator=g)
        self._boot_numbers: list[_Numbers] | None = None

    def run(self, component: str, mode: str, draw: int = 0) -> _Run | None:
        for r in self.runs:
            if r.component == component and r.mode == mode and r.draw == draw:
                return r
        return None

    def has(self, component: str) -> bool:
        return self.run(component, "mean") is not None

    # -- per-sequence means: the full batch [1] and the bootstrap samples [n_boot] ---------------
    def _mean(self, rows: Tensor, boot: bool) -> Tensor:
        return rows[self.idx].mean(1) if boot else rows.mean().reshape(1)

    def _metric(self, component: str, mode: str, boot: bool) -> Tensor:
        if mode != "resample":
            return self._mean(self.run(component, mode).metric, boot)
        stacked = torch.stack([self.run(component, mode, d).metric for d in range(self.draws)])  # [D, B]
        if not boot:
            return stacked.mean().reshape(1)
        return stacked[self.draw[:, None], self.idx].mean(1)

    def _gap(self, boot: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        clean, chance = self._mean(self.clean, boot), self._mean(self.chance_rows, boot)
        gap = self.sign * (clean - chance)
        full = self.sign * (self.best - chance)
        at_chance = gap < AT_CHANCE * full.abs()
        return clean, chance, gap, at_chance

    def _lost(self, component: str, mode: str, boot: bool) -> Tensor:
        clean, _, gap, at_chance = self._gap(boot)
        raw = self.sign * (clean - self._metric(component, mode, boot)) / gap.clamp(min=1e-12)
        return torch.where(at_chance, torch.zeros_like(raw), raw.clamp(0, 1))

    def _kept(self, component: str, boot: bool) -> Tensor:
        _, chance, gap, at_chance = self._gap(boot)
        raw = self.sign * (self._metric(component, "mean", boot) - chance) / gap.clamp(min=1e-12)
        return torch.where(at_chance, torch.zeros_like(raw), raw.clamp(0, 1))

    def _series(self, boot: bool) -> dict[str, Tensor | None]:
        mem = self.run("memory", "mean")
        still_rows = []
        for mode in MODES:
            for d in range(self.draws if mode == "resample" else 1):
                r = self.run("memory", mode, d)
                still_rows += [r.prob, r.flips]
        moves_all = torch.stack([self._mean(x, boot) for x in still_rows]).amax(0)
        out: dict[str, Tensor | None] = {
            "at_chance": self._gap(boot)[3].float(),
            "moves_all": moves_all,
            "necessity": self._lost("memory", "mean", boot),
            "zero": self._lost("memory", "zero", boot),
            "conflict": self._lost("memory", "resample", boot),
            "moves": self._mean(mem.prob, boot),
            "sufficiency": self._kept("bypass", boot) if self.has("bypass") else None,
            "bypass_necessity": self._lost("bypass", "mean", boot) if self.has("bypass") else None,
            "bypass_sufficiency": self._kept("memory", boot) if self.has("bypass") else None,
            "joint": self._lost("both", "mean", boot) if self.has("both") else None,
            "state": self._lost("state", "mean", boot) if self.has("state") else None,
            "per_position": None,
        }
        if mem.position_count is not None and float(mem.position_count.sum()) > 0:
            lost = self._mean(mem.position_lost, boot)
            count = self._mean(mem.position_count, boot)
            out["per_position"] = torch.where(count > 0, lost / count.clamp(min=1e-12), torch.zeros_like(lost))
        return out

    def numbers(self) -> _Numbers:
        point, boot = self._series(False), self._series(True)
        # the clean metric's pessimistic 95% end reaching chance also means at chance
        clean_boot, chance_boot = self._mean(self.clean, True), self._mean(self.chance_rows, True)
        worst_gap = float(torch.quantile((self.sign * (clean_boot - chance_boot)).double(), 0.025))
        self.at_chance = bool(point["at_chance"][0] > 0) or worst_gap <= 0

        def est(key: str, mode: str = "mean") -> Estimate | None:
            return None if point[key] is None else _interval(point[key], boot[key], mode)

        moves_all = est("moves_all")
        self.boot = boot
        return _Numbers(
            at_chance=self.at_chance, still=moves_all.hi < STILL, necessity=est("necessity"),
            sufficiency=est("sufficiency"), bypass_necessity=est("bypass_necessity"),
            bypass_sufficiency=est("bypass_sufficiency"), joint=est("joint"), state_necessity=est("state"),
            conflict=est("conflict", "resample"), zero_necessity=est("zero", "zero"),
            per_position=est("per_position"), moves=est("moves"))

    def interval(self, component: str) -> Estimate:
        """The necessity of one more removal (a single layer's site), mean mode, with its interval."""
        return _interval(self._lost(component, "mean", False), self._lost(component, "mean", True), "mean")

    def stability(self, verdict: str) -> float:
        """Share of bootstrap samples whose verdict, decided on that sample's values, is `verdict`."""
        b = self.boot
        same = 0
        for i in range(self.n_boot):
            def v(key):
                return None if b[key] is None else float(b[key][i])
            got, _ = decide(at_chance=bool(b["at_chance"][i] > 0),
                            still=v("moves_all") < STILL, necessity=v("necessity"), sufficiency=v("sufficiency"),
                            bypass_necessity=v("bypass_necessity"), bypass_sufficiency=v("bypass_sufficiency"),
                            joint_necessity=v("joint"), per_position=v("per_position"), moves=v("moves"))
            same += got == verdict
        return same / max(self.n_boot, 1)

    def sparse_steps(self, top: int = 5) -> list[dict]:
        """The timesteps where most positions lose half their gap without memory."""
        mem = self.run("memory", "mean")
        if mem.lost_per_step is None:
            return []
        order = torch.argsort(mem.lost_per_step, descending=True)[:top]
        return [{"t": int(t), "positions_lost": int(mem.lost_per_step[t])} for t in order if mem.lost_per_step[t] > 0]


def _interval(point: Tensor, boot: Tensor, mode: str) -> Estimate:
    """A point estimate ([1]) and its bootstrap samples as an Estimate with the 95% percentile interval."""
    lo, hi = torch.quantile(boot.double(), torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    v = float(point[0]) + 0.0  # no -0.0
    return Estimate(v, min(lo, v) + 0.0, max(hi, v) + 0.0, mode)


def _layer_component(site: str) -> str:
    return f"layer {site}"


def _layer_line(layers: list[dict]) -> str:
    """The per-layer necessities and the layers the task needs, for the evidence."""
    def pct(row):
        return _pct(Estimate(row["necessity"]["value"], *row["necessity"]["ci95"]))
    each = "; ".join(f"layer {r['layer']} {r['kind']} ({r['role']}) {pct(r)}" for r in layers)
    needed = [f"layer {r['layer']} ({r['kind']})" for r in layers if r["needed"]]
    verdict = (f"the task needs {', '.join(needed)}" if needed else
               "no single layer is necessary on its own (every lower bound below "
               f"{100 * HIGH:.0f}%): the layers stand in for each other or share the work")
    return (f"per layer, one layer's output mean-ablated at a time, share of the gap lost: {each}; {verdict} "
            f"(necessity lower bound >= {100 * HIGH:.0f}%)")


def _warnings(n: _Numbers, stability: float, collapse, uniform_static: bool, est: _Estimator,
              batch: Batch) -> list[dict]:
    out = []
    if n.at_chance:
        out.append({"code": "at_chance", "message": "the clean model is at chance (or its interval reaches chance): "
                    "there is no gap for an ablation to lose, so necessity and sufficiency cannot be measured"})
    collapsed = [s for s in collapse if s.collapsed]
    for s in collapsed:
        out.append({"code": "collapsed_memory", "message": (
            f"{s.name}: at most {s.distinct:.2f} distinct {s.distinct_axis}s of {s.distinct_of} at any step: every "
            f"{s.distinct_axis} holds the same state, so the memory acts as a single vector")})
    if not collapsed and uniform_static and any((s.mean_effective_rank or 2) <= 1.05 for s in collapse):
        out.append({"code": "collapsed_memory", "message": "the memory has effective rank 1 and the read weights are "
                    "uniform and static: the memory acts as a single vector"})
    modes = {"mean": n.necessity, "zero": n.zero_necessity, "resample": n.conflict}
    needs = [m for m, e in modes.items() if e.lo >= HIGH]
    not_needed = [m for m, e in modes.items() if e.hi < LOW]
    if needs and not_needed and not n.at_chance:
        numbers = ", ".join(f"{m} {e.value:.2f} [{e.lo:.2f}, {e.hi:.2f}]" for m, e in modes.items())
        why = ("when memory and the bypass disagree the output follows memory, yet the task survives memory's "
               "removal: another path can do it" if "resample" in needs else
               "the removals disagree on what losing memory costs")
        out.append({"code": "ablation_modes_disagree", "message": (
            f"memory looks necessary by {', '.join(needs)} ablation but not by {', '.join(not_needed)} ablation "
            f"(share of the gap lost: {numbers}): {why}")})
    if n.per_position is not None and n.per_position.lo >= SPARSE and n.necessity.lo < HIGH and not n.at_chance:
        steps = est.sparse_steps()
        where = ", ".join(f"t={s['t']} ({s['positions_lost']})" for s in steps)
        out.append({"code": "sparse_use", "message": (
            f"{100 * n.per_position.value:.0f}% of scored positions (95% CI {100 * n.per_position.lo:.0f}-"
            f"{100 * n.per_position.hi:.0f}%) lose at least half their gap without memory, while the metric as a "
            f"whole loses {100 * n.necessity.value:.0f}%; most at {where}")})
    if stability < STABLE:
        out.append({"code": "unstable", "message": (
            f"the verdict holds in only {100 * stability:.0f}% of bootstrap samples (sequences and donor assignments "
            f"resampled; below {100 * STABLE:.0f}%): more sequences would settle it")})
    return out


def _pct(e: Estimate) -> str:
    return f"{100 * e.value + 0.0:.0f}% (95% CI {100 * e.lo + 0.0:.0f}-{100 * e.hi + 0.0:.0f}%)"


def _evidence(n: _Numbers, est: _Estimator, metric_name: str, chance: float, best: float, sign: float,
              m_clean: float, removed: dict, B: int, n_boot: int, draws: int) -> list[str]:
    lines = [_metric_line(metric_name, m_clean, chance, best, sign, n.at_chance)]
    mem = est.run("memory", "mean").result
    lines.append(f"removing memory ({', '.join(removed['memory'])}, mean-ablated) gives {metric_name} "
                 f"{mem.metric:.4g}: necessity {_pct(n.necessity)} of the gap to chance lost "
                 f"({B} sequences, {n_boot} bootstrap samples over sequences and {draws} donor assignments)")
    lines.append(f"the other modes: zeroed {_pct(n.zero_necessity)} lost; resampled from other sequences "
                 f"(conflict: reads that disagree with the bypass) {_pct(n.conflict)} lost")
    lines.append(f"without memory outputs change by {mem.prob_change:.3f} in probability on average "
                 f"(KL {mem.kl:.3g} nats), {100 * mem.flip_rate:.1f}% of predictions flip"
                 + (": the outputs do not depend on memory" if n.still else ""))
    if n.bypass_necessity is not None:
        byp = est.run("bypass", "mean").result
        lines.append(f"removing the bypass ({', '.join(removed['bypass'])}) gives {metric_name} {byp.metric:.4g}: "
                     f"bypass necessity {_pct(n.bypass_necessity)}; memory alone keeps {_pct(n.sufficiency)} "
                     f"of the gap (memory's sufficiency), the bypass alone {_pct(n.bypass_sufficiency)}")
        if n.joint is not None:
            lines.append(f"removing memory and the bypass together loses {_pct(n.joint)}")
    else:
        lines.append("the model has no path parallel to memory (no bypass): memory's sufficiency is not defined")
    if n.state_necessity is not None:
        lines.append(f"removing the controller's recurrent state ({', '.join(removed['state'])}) loses "
                     f"{_pct(n.state_necessity)} (it also drives memory's addressing)")
    if n.per_position is not None:
        lines.append(f"{_pct(n.per_position)} of scored positions lose at least half their own gap without memory")
    return lines


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


def _read_weights(model: SiteModel, batch: Batch) -> tuple[str, bool, bool]:
    """A line describing the read weightings, when the model has any (how sharp they are,
    how much they move from step to step), whether they look busy (normalised entropy
    below BUSY_ENTROPY or moving more than BUSY_MOVE), and whether they are uniform and
    static (entropy above 0.99, moving less than 0.01: the signature of a collapsed memory)."""
    sites = [n for n in slot_weight_sites(model) if specs(model)[n].kind == "read_weights"]
    if not sites:
        return "", False, False
    with evaluating(model):
        _, vals = forward(model, batch.inputs, sites)
    parts, busy, uniform_static = [], False, True
    for n in sites:
        w = vals[n].float()
        h, _, _ = normalised_entropy(w, w.shape[-1])
        move = float(0.5 * (w[:, 1:] - w[:, :-1]).abs().sum(-1).mean()) if w.shape[1] > 1 else 0.0
        mean_h = float(torch.nanmean(h))
        busy = busy or mean_h < BUSY_ENTROPY or move > BUSY_MOVE
        uniform_static = uniform_static and mean_h > 0.99 and move < 0.01
        parts.append(f"{n} have mean normalised entropy {mean_h:.2f} and move by {move:.2f} "
                     "(total variation) from step to step")
    return "read weights: " + "; ".join(parts), busy, uniform_static
