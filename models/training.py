"""Training a model on a synthetic task, with an optional length curriculum, a checkpoint
series and hooks for extra loss terms.

    config = TrainConfig(steps=10_000, batch_size=32, lr=3e-3, min_lr=1e-4, target=0,
                         eval_params={"min_length": 10}, checkpoint_every=500, out_dir="runs/ntm-copy")
    result = train(model, make_task("copy", max_length=10), config)
    result.final_metrics     # {"loss": ..., "train_loss": ..., "<task metric>": ...}
    result.checkpoints       # [runs/ntm-copy/step-000500.safetensors, ..., final.safetensors]

Determinism: batches are drawn with `task.sample(batch_size, seed=<from seed and step>)`
and torch's RNG is seeded with `seed` at the start, so on the CPU the same model init,
task and config give bit-identical weights. (CUDA kernels may not be deterministic.)

Gradient clipping: `clip` clips every gradient element to [-clip, clip] (value clipping,
as in Graves 2014 and Collier & Beel 2018's NTM implementation, which clip to 10);
`clip_norm` additionally rescales the whole gradient to at most that global L2 norm
(applied first). Either can be None.

Measured (NTM, controller 100, 32 x 20 memory, random memory init, copy lengths 1-10,
batch 32, Adam 3e-3 cosine-decayed to 1e-4 over 10,000 steps, clip 10, no curriculum,
target 0 on 64 length-10 sequences; one core of a shared 2-core CPU): seeds 0-4 reached
0 wrong bits after 1000, 2500, 1900, 6200 and 700 steps (3.5, 5.4, 4.9, 11.2 and 1.8
minutes; seed 3 was under 0.1 wrong bits per sequence from step 3300). On 512 fresh
length-10 sequences the finished models make 0.01-0.09 wrong bits per sequence.
Without the decay a run sometimes found the solution and lost it again; with the length
curriculum below (fraction 0.5, batch 16, constant lr) 2 of 3 seeds settled on a memory-free
solution and had not left it after 4000 steps.

Curriculum: short sequences first. `curriculum` is None/False/"none" (train on the task as
given), True or "linear" (a `LengthCurriculum()`: `max_length` grows linearly from the task's
`min_length` to its `max_length` over the first half of training), a `LengthCurriculum`
with its own parameter/start/end/fraction, "bandit" or a `BanditCurriculum` (models/
curriculum.py: Exp3.S picks a difficulty bucket every step, rewarded by the loss decrease on
that step's batch; each history entry lists the buckets chosen since the previous one as
`curriculum_steps` and the policy as `curriculum_probs`), or any function `(step, steps) ->
dict` of task-parameter overrides for that step (step counts from 0). The eval batch always
uses the task as given (plus `eval_params`), never the curriculum.

Bypass bottleneck: a model with a variational bottleneck on its bypass (the architectures'
`bypass_bottleneck` field, models/bottleneck.py) has beta * KL added to its loss every step;
history entries log the mean KL since the previous entry as `bottleneck_kl`.

Extra loss terms: `train(..., extra_loss=fn, record=sites)` with
`fn(model, batch, logits, trace) -> scalar tensor` adds it to the task loss each step. The
sites named in `record` are recorded with `hooks(model, record=record, keep_grad=True)`, so
`trace["memory.read"]` is still in the autograd graph (an auxiliary reconstruction loss from
memory reads, for instance). An `extra_loss` that is a `torch.nn.Module` has its parameters
trained with the model's. These are objects, not options, so they are arguments of
`train()` beside the `TrainConfig`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .bottleneck import VariationalBottleneck, bottleneck_penalty
from .checkpoints import save_checkpoint
from .curriculum import BanditCurriculum, BanditSchedule
from .sites import Intervention, SiteModel, Trace, hooks
from .tasks.base import Batch, Task

ExtraLoss = Callable[[SiteModel, Batch, Tensor, "Trace | None"], Tensor]
CurriculumFn = Callable[[int, int], dict]

# keeps training batches (seed * _SEED_STRIDE + step) apart from the eval batch
_SEED_STRIDE = 1_000_003
DEFAULT_EVAL_SEED = 2**31 - 1
PATH_DROPOUT_MODES = ("zero", "mean")
PATH_DROPOUT_PER = ("sequence", "batch")
CURRICULA = ("none", "linear", "bandit")  # the curricula a TrainConfig (and a sweep file) names


@dataclass
class LengthCurriculum:
    """Task parameter `param` (default `max_length`) grows linearly from `start` to `end`
    over the first `fraction` of training, then stays at `end`. `end` defaults to the
    task's own value of `param`; `start` to its matching minimum (`min_length` for
    `max_length`, `min_items` for `max_items`), else 1."""

    param: str = "max_length"
    start: int | None = None
    end: int | None = None
    fraction: float = 0.5

    def overrides(self, step: int, steps: int, params: Any) -> dict:
        if not hasattr(params, self.param):
            raise ValueError(
                f"curriculum: the task has no parameter {self.param!r}; it has "
                f"{[f.name for f in dataclasses.fields(params)]}"
            )
        end = int(getattr(params, self.param) if self.end is None else self.end)
        low = _paired_minimum(params, self.param)
        start = self.start if self.start is not None else (low if low is not None else 1)
        ramp = max(1.0, self.fraction * steps)
        value = int(round(start + (end - start) * min(1.0, step / ramp)))
        if low is not None:
            value = max(value, low)  # never ask for max < min
        return {self.param: value}


def _paired_minimum(params: Any, param: str) -> int | None:
    if param.startswith("max_") and hasattr(params, "min_" + param[4:]):
        return int(getattr(params, "min_" + param[4:]))
    return None


@dataclass(frozen=True)
class TrainConfig:
    """Every option of `train()`, once, with its default. `mnemoscope train` and the zoo's
    recipes build one; `dataclasses.replace(config, ...)` derives a variant."""

    # -- the run: `steps` optimiser steps, each on `batch_size` fresh sequences. `seed` seeds
    #    torch's RNG at the start and every training batch, so a config trains the same
    #    weights every time (on the CPU).
    steps: int
    batch_size: int = 16
    seed: int = 0

    # -- the optimiser: "adam" (lr ~1e-3..3e-3) or "rmsprop" (Graves 2014: lr 1e-4, momentum
    #    0.9, alpha 0.95; `momentum` is used by rmsprop only). With `min_lr` the learning rate
    #    follows a cosine from `lr` down to `min_lr` over `steps` (a high rate finds the memory
    #    solution, a low one polishes it).
    optimizer: str = "adam"
    lr: float = 1e-3
    min_lr: float | None = None
    momentum: float = 0.9

    # -- gradient clipping: `clip_norm` rescales the whole gradient to at most that global L2
    #    norm, then `clip` clips each element to [-clip, clip]; None turns either off.
    clip: float | None = 10.0
    clip_norm: float | None = None

    # -- the curriculum: None/False/"none", True/"linear" (a default LengthCurriculum),
    #    "bandit" (a default BanditCurriculum), a LengthCurriculum, a BanditCurriculum or a
    #    function (step, steps) -> task-parameter overrides (see the module doc).
    curriculum: bool | str | LengthCurriculum | BanditCurriculum | CurriculumFn | None = None

    # -- evaluation: the task metric on one fixed batch (`eval_size` sequences drawn with
    #    `eval_seed`, the task's params plus `eval_params`) every `eval_every` steps (default
    #    steps // 20), at every checkpoint and at the end; each evaluation is one entry of the
    #    history, with the mean training loss since the previous one. Training stops early
    #    once the metric is at least as good as `target`.
    eval_every: int | None = None
    eval_size: int = 64
    eval_params: dict = field(default_factory=dict)
    eval_seed: int = DEFAULT_EVAL_SEED
    target: float | None = None

    # -- checkpoints: with `out_dir`, `final.safetensors` at the end, and with
    #    `checkpoint_every` also `step-000100.safetensors`, ... every that many steps; `name`
    #    is stored in each.
    out_dir: str | Path | None = None
    checkpoint_every: int | None = None
    name: str | None = None

    # -- path dropout: {role: p} removes the sites of that role (SiteSpec.role: "memory",
    #    "bypass", ...) for a share p of the training sequences (`path_dropout_per="sequence"`)
    #    or of the batches ("batch"), through the site contract: replaced by zero
    #    (`path_dropout_mode="zero"`) or by their mean over the batch at each step ("mean").
    #    The roles' draws exclude each other (a sequence loses at most one role; the shares
    #    add up to at most 1), so e.g. {"memory": 0.4, "bypass": 0.4} trains each path to do
    #    the task alone: the redundant control of models/controls.py. Training only.
    path_dropout: dict = field(default_factory=dict)
    path_dropout_mode: str = "zero"
    path_dropout_per: str = "sequence"

    # -- where and how: "cpu", "cuda", "cuda:N" or "auto"; a tqdm progress bar.
    device: str | torch.device = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.checkpoint_every is not None:
            if self.checkpoint_every < 1:
                raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
            if self.out_dir is None:
                raise ValueError("checkpoint_every needs out_dir: where should the checkpoints go?")
        shares = dict(self.path_dropout or {})
        if any(not 0.0 <= float(p) <= 1.0 for p in shares.values()) or sum(map(float, shares.values())) > 1.0:
            raise ValueError(f"path_dropout shares must each be in [0, 1] and add up to at most 1, got {shares}")
        if self.path_dropout_mode not in PATH_DROPOUT_MODES:
            raise ValueError(f"path_dropout_mode must be one of {PATH_DROPOUT_MODES}, not {self.path_dropout_mode!r}")
        if self.path_dropout_per not in PATH_DROPOUT_PER:
            raise ValueError(f"path_dropout_per must be one of {PATH_DROPOUT_PER}, not {self.path_dropout_per!r}")
        if isinstance(self.curriculum, str) and self.curriculum not in CURRICULA:
            raise ValueError(f"curriculum must be one of {CURRICULA} (or an object), not {self.curriculum!r}")


@dataclass
class TrainResult:
    final_metrics: dict
    history: list[dict]
    checkpoints: list[Path]
    seconds: float
    steps: int  # steps actually run (fewer than asked when `target` was reached)
    metric_name: str = "metric"
    higher_is_better: bool = True
    final_checkpoint: Path | None = None
    config: dict = field(default_factory=dict)  # the training arguments, as saved in checkpoints

    @property
    def metric(self) -> float:
        return self.final_metrics[self.metric_name]


def resolve_device(device: str | torch.device) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto`; asking for CUDA without it is an error, not a fallback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} was asked for but CUDA is not available "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def train(
    model: SiteModel,
    task: Task,
    config: TrainConfig,
    *,
    extra_loss: ExtraLoss | None = None,
    record: Sequence[str] = (),
    on_eval: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train `model` in place on `task` as `config` says (left in eval mode).

    extra_loss, record: an extra loss term and the sites it reads (see the module doc).
    on_eval: called with each history entry (progress reporting).
    """
    run = _Run(model, task, config, extra_loss, record, on_eval)
    steps = config.steps
    last = run.evaluate(0, run.overrides(0))
    bar = _progress_bar(steps, config.progress)
    overrides: dict = {}
    done = 0
    try:
        for step in range(1, steps + 1):
            overrides = run.overrides(step - 1)
            run.step(step, overrides)
            done = step
            is_ckpt = config.checkpoint_every is not None and step % config.checkpoint_every == 0
            if step % run.eval_every == 0 or step == steps or is_ckpt:
                last = run.evaluate(step, overrides)
                if is_ckpt:
                    run.checkpoint(f"step-{step:06d}.safetensors", step, last)
                bar.set_postfix(loss=f"{last['train_loss']:.4f}", **{run.metric_name: f"{last[run.metric_name]:.4g}"})
                if run.reached_target(last):
                    bar.update(1)
                    break
            bar.update(1)
    finally:
        bar.close()
    return run.finish(done, last, overrides)


@dataclass
class _Window:
    """Sums of the training numbers since the last evaluation."""

    task_loss: float = 0.0
    extra_loss: float = 0.0
    bottleneck_kl: float = 0.0
    grad_norm: float = 0.0
    n: int = 0
    curriculum_steps: list = field(default_factory=list)  # the bandit's bucket at each step

    def mean(self, name: str) -> float | None:
        return getattr(self, name) / self.n if self.n else None


class _Run:
    """One call of `train()`: the model, optimiser and fixed eval batch, and what the run
    has produced so far (history, checkpoints). Its methods are the loop's parts: a
    training step, an evaluation, a checkpoint, and the result at the end."""

    def __init__(self, model: SiteModel, task: Task, config: TrainConfig, extra_loss: ExtraLoss | None,
                 record: Sequence[str], on_eval: Callable[[dict], None] | None):
        self.model, self.task, self.config = model, task, config
        self.extra_loss, self.record, self.on_eval = extra_loss, list(record), on_eval
        self.device = resolve_device(config.device)
        self.out = Path(config.out_dir) if config.out_dir is not None else None
        self.eval_every = max(1, config.steps // 20) if config.eval_every is None else int(config.eval_every)
        self.bandit: BanditSchedule | None = None
        if config.curriculum == "bandit" or isinstance(config.curriculum, BanditCurriculum):
            chosen = config.curriculum if isinstance(config.curriculum, BanditCurriculum) else BanditCurriculum()
            self.bandit = chosen.start(task.params, config.steps, config.seed)
            self.schedule = lambda step, steps: self.bandit.overrides(step)
        else:
            self.schedule = _curriculum_fn(config.curriculum, task)
        self.has_bottleneck = any(isinstance(m, VariationalBottleneck) for m in model.modules())
        self.metric_name = task.metric_name or "metric"

        # the order below (seed, move, optimiser, eval batch) is what makes a config's weights
        # reproducible: keep it
        torch.manual_seed(config.seed)
        model.to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if isinstance(extra_loss, torch.nn.Module):
            # an extra loss with its own weights (the reconstruction decoder of models/remedies.py)
            # learns with the model, under the same optimizer and clipping
            extra_loss.to(self.device)
            self.params += [p for p in extra_loss.parameters() if p.requires_grad]
        self.opt = _make_optimizer(config.optimizer, self.params, config.lr, config.momentum)
        self.lr_schedule = None
        if config.min_lr is not None:
            self.lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.opt, T_max=max(1, config.steps), eta_min=config.min_lr)

        self.eval_task = _with_params(task, config.eval_params or {})
        self.eval_batch = self.eval_task.sample(config.eval_size, seed=config.eval_seed).to(self.device)
        self.tasks: dict[tuple, Task] = {(): task}  # the task under each curriculum override
        self.dropped_sites = _role_sites(model, config.path_dropout)
        self.saved_config = _saved_config(config, self.device, extra_loss, self.record)
        self.history: list[dict] = []
        self.checkpoints: list[Path] = []
        self.window = _Window()
        self.start = time.perf_counter()

    def overrides(self, step: int) -> dict:
        """The curriculum's task-parameter overrides for `step` (counted from 0)."""
        return self.schedule(step, self.config.steps) if self.schedule else {}

    def step(self, step: int, overrides: dict) -> None:
        """One optimiser step on a fresh batch; its numbers go into the window."""
        key = tuple(sorted(overrides.items()))
        if key not in self.tasks:
            self.tasks[key] = _with_params(self.task, overrides)
        task = self.tasks[key]
        batch = task.sample(self.config.batch_size, seed=_batch_seed(self.config.seed, step)).to(self.device)

        self.model.train()
        trace = None
        dropped = self.path_dropout(batch.inputs.shape[0])
        if self.extra_loss is not None or self.record or dropped:
            with hooks(self.model, record=self.record, interventions=dropped, keep_grad=True) as trace:
                logits = self.model(batch.inputs)
        else:
            logits = self.model(batch.inputs)
        task_loss = task.loss(logits, batch)
        loss = task_loss
        extra_value = None
        if self.extra_loss is not None:
            extra_value = self.extra_loss(self.model, batch, logits, trace)
            loss = loss + extra_value
        bottleneck = bottleneck_penalty(self.model) if self.has_bottleneck else None
        if bottleneck is not None:
            loss = loss + bottleneck[0]  # beta * KL: the information the bypass code carries costs
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; try a lower lr or clipping")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip, clip_norm = self.config.clip, self.config.clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip_norm if clip_norm else math.inf)
        if clip:
            torch.nn.utils.clip_grad_value_(self.params, clip)
        self.opt.step()
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        if self.bandit is not None:
            self.bandit.feedback(task_loss.item() - self.loss_after_step(task, batch, dropped))

        w = self.window
        w.task_loss += task_loss.item()
        w.extra_loss += extra_value.item() if extra_value is not None else 0.0
        w.bottleneck_kl += bottleneck[1].item() if bottleneck is not None else 0.0
        if self.bandit is not None:
            w.curriculum_steps.append(overrides[self.bandit.param])
        w.grad_norm += float(grad_norm)
        w.n += 1

    @torch.no_grad()
    def loss_after_step(self, task: Task, batch: Batch, dropped: list[Intervention]) -> float:
        """The task loss on the step's batch after the update, measured as the step measured it
        (training mode, the same path dropout): the bandit's learning progress is the drop."""
        if dropped:
            with hooks(self.model, interventions=dropped):
                logits = self.model(batch.inputs)
        else:
            logits = self.model(batch.inputs)
        return float(task.loss(logits, batch))

    def path_dropout(self, B: int) -> list[Intervention]:
        """This step's removals: one uniform draw per sequence (or one per batch) picks at
        most one role whose sites it loses (TrainConfig.path_dropout)."""
        if not self.dropped_sites:
            return []
        per_batch = self.config.path_dropout_per == "batch"
        u = torch.rand(1 if per_batch else B).expand(B)  # torch's RNG, seeded by config.seed
        value = 0.0 if self.config.path_dropout_mode == "zero" else _batch_mean
        out, low = [], 0.0
        for role, sites in self.dropped_sites.items():
            share = float(self.config.path_dropout[role])
            rows = ((u >= low) & (u < low + share)).to(self.device)
            low += share
            if rows.any():
                out += [Intervention(name, value, rows=rows) for name in sites]
        return out

    def evaluate(self, step: int, overrides: dict) -> dict:
        """A history entry: the window's mean training numbers and the eval batch's metric."""
        entry: dict[str, Any] = {"step": step, "train_loss": self.window.mean("task_loss")}
        if self.extra_loss is not None:
            entry["extra_loss"] = self.window.mean("extra_loss")
        if self.has_bottleneck:
            entry["bottleneck_kl"] = self.window.mean("bottleneck_kl")
        entry["grad_norm"] = self.window.mean("grad_norm")
        entry["lr"] = self.opt.param_groups[0]["lr"]
        entry.update(_evaluate(self.model, self.eval_task, self.eval_batch, self.metric_name))
        if overrides:
            entry["curriculum"] = dict(overrides)
        if self.bandit is not None:
            entry["curriculum_steps"] = list(self.window.curriculum_steps)
            entry["curriculum_probs"] = self.bandit.probabilities()
        entry["seconds"] = time.perf_counter() - self.start
        self.window = _Window()
        self.history.append(entry)
        if self.on_eval is not None:
            self.on_eval(entry)
        return entry

    def reached_target(self, entry: dict) -> bool:
        target, value = self.config.target, entry[self.metric_name]
        if target is None:
            return False
        return value >= target if self.task.higher_is_better else value <= target

    def checkpoint(self, filename: str, step: int, entry: dict) -> None:
        """Save the model under out_dir with the entry's metrics and the saved config."""
        metrics = {k: entry[k] for k in ("loss", self.metric_name, "train_loss") if entry.get(k) is not None}
        path = save_checkpoint(self.out / filename, self.model, task=self.task.spec(), step=step, metrics=metrics,
                               name=self.config.name, extra={"train": self.saved_config})
        self.checkpoints.append(path)

    def finish(self, done: int, last: dict, overrides: dict) -> TrainResult:
        """The final evaluation and checkpoint, the model in eval mode, and the result."""
        if done and self.history[-1]["step"] != done:
            last = self.evaluate(done, overrides)
        if self.out is not None:
            self.checkpoint("final.safetensors", done, last)
        self.model.eval()  # ready for analysis; dropout-like training paths (bypass_dropout) off
        final = {"loss": last["loss"], self.metric_name: last[self.metric_name], "train_loss": last.get("train_loss")}
        return TrainResult(
            final_metrics=final,
            history=self.history,
            checkpoints=self.checkpoints,
            seconds=time.perf_counter() - self.start,
            steps=done,
            metric_name=self.metric_name,
            higher_is_better=self.task.higher_is_better,
            final_checkpoint=self.checkpoints[-1] if self.out is not None else None,
            config=self.saved_config,
        )


def _role_sites(model: SiteModel, shares: dict) -> dict[str, list[str]]:
    """{role: the model's sites of that role} for each role with a positive share."""
    specs = model.site_specs()
    out = {}
    for role, share in (shares or {}).items():
        if float(share) <= 0:
            continue
        sites = [n for n, s in specs.items() if s.role == role]
        if not sites:
            roles = sorted({s.role for s in specs.values() if s.role})
            raise ValueError(f"path_dropout: the model has no sites of role {role!r}; its roles are {roles}")
        out[role] = sites
    return out


def _batch_mean(value: Tensor, t: int) -> Tensor:
    """A site's value at one step replaced by its mean over the batch (mean ablation)."""
    return value.mean(0, keepdim=True).expand_as(value)


def _saved_config(config: TrainConfig, device: torch.device, extra_loss, record: list[str]) -> dict:
    """The training options as checkpoints record them (`extra["train"]`)."""
    return {
        "steps": config.steps, "batch_size": config.batch_size, "lr": config.lr, "min_lr": config.min_lr,
        "optimizer": config.optimizer, "momentum": config.momentum if config.optimizer == "rmsprop" else None,
        "seed": config.seed, "clip": config.clip, "clip_norm": config.clip_norm,
        "curriculum": _describe(config.curriculum), "eval_size": config.eval_size,
        "eval_params": config.eval_params or {}, "eval_seed": config.eval_seed, "device": str(device),
        "extra_loss": _describe(extra_loss), "record": list(record),
        "path_dropout": dict(config.path_dropout or {}), "path_dropout_mode": config.path_dropout_mode,
        "path_dropout_per": config.path_dropout_per,
    }


@torch.no_grad()
def _evaluate(model: SiteModel, task: Task, batch: Batch, metric_name: str) -> dict:
    was_training = model.training
    model.eval()
    logits = model(batch.inputs)
    loss = float(task.loss(logits, batch))
    metric = float(task.metric(logits, batch).float().mean())
    model.train(was_training)
    return {"loss": loss, metric_name: metric}


def _batch_seed(seed: int, step: int) -> int:
    return (seed * _SEED_STRIDE + step) % (2**31 - 2)


def _with_params(task: Task, overrides: dict) -> Task:
    if not overrides:
        return task
    try:
        params = dataclasses.replace(task.params, **overrides)
    except TypeError as exc:
        names = [f.name for f in dataclasses.fields(task.params)]
        raise ValueError(f"task {task.name!r} has no parameter among {sorted(overrides)}; it has {names}") from exc
    return type(task)(params)


def _curriculum_fn(curriculum, task: Task) -> CurriculumFn | None:
    if curriculum is None or curriculum is False or curriculum == "none":
        return None
    if curriculum is True or curriculum == "linear":
        curriculum = LengthCurriculum()
    if isinstance(curriculum, LengthCurriculum):
        c = curriculum
        c.overrides(0, 1, task.params)  # fail now, not at step 1, if the task lacks the parameter
        return lambda step, steps: c.overrides(step, steps, task.params)
    if callable(curriculum):
        return curriculum
    raise TypeError(f"curriculum must be None, a bool, one of {CURRICULA}, a LengthCurriculum, a BanditCurriculum "
                    f"or a function; got {curriculum!r}")


def _make_optimizer(name: str, params, lr: float, momentum: float) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, alpha=0.95)
    raise ValueError(f"unknown optimizer {name!r}; use 'adam' or 'rmsprop'")


def _describe(obj) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if dataclasses.is_dataclass(obj):
        return {"type": type(obj).__name__, **dataclasses.asdict(obj)}
    return getattr(obj, "__qualname__", None) or repr(obj)


class _NoBar:
    def set_postfix(self, **kw) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(steps: int, progress: bool):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="train", unit="step", dynamic_ncols=True, leave=True)


__all__ = ["LengthCurriculum", "BanditCurriculum", "CURRICULA", "TrainConfig", "TrainResult", "resolve_device", "train"]
