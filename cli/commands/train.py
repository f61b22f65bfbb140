"""`mnemoscope train`: train an architecture on a synthetic task, writing a checkpoint series.

    mnemoscope train --arch ntm --task copy --task-param max_length=10 --steps 3000 \\
        --lr 3e-3 --checkpoint-every 500 --out runs/ntm-copy

The model's input_size/output_size (and vocab_size, where the architecture has one) come
from the task; `--model-param` sets the rest of its config.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import CLIError

# Small, quick defaults for learning copy-like tasks on a CPU; the architectures' own
# defaults follow the papers. NTM: 32 slots train about twice as fast as the paper's 128
# and hold copy sequences of up to 32; memory_init="random" because with a constant
# memory and all-zero initial weightings every slot gets the same write (the symmetry is
# never broken and the memory acts as one vector). With these and
# `--steps 10000 --lr 3e-3 --min-lr 1e-4 --target 0`, copy (lengths 1-10) reaches 0 wrong
# bits in 700-2500 steps for seeds 0, 1, 2, 4 (2-6 minutes on one shared CPU core) and
# 6200 for seed 3 (under 0.1 wrong bits per sequence from step 3300).
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "ntm": {"controller_size": 100, "memory_slots": 32, "memory_width": 20, "memory_init": "random"},
    "dnc": {"controller_size": 64, "memory_slots": 32, "memory_width": 16},
    "lstm": {"hidden_size": 100},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="ntm", help="architecture (ntm, dnc, lstm, ...); default ntm")
    p.add_argument("--task", default="copy", help="task (copy, repeat_copy, associative_recall, mqar); default copy")
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE",
                   help="task parameter, e.g. max_length=10 (repeatable)")
    p.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                   help="model config field, e.g. memory_slots=64 (repeatable)")
    p.add_argument("--hf-config", type=Path, default=None, metavar="FILE.json",
                   help="with --arch hf: the Hugging Face config.json of the model to build and train from "
                        "scratch (a supported model_type, no auto_map; its vocab_size must match the task's), "
                        "e.g. models/hf_configs/qwen3_next_tiny.json")
    p.add_argument("--eval-param", action="append", default=[], metavar="KEY=VALUE",
                   help="task parameter override for the eval batch only (default for tasks with "
                        "min_length/max_length: min_length=max_length, the longest sequences)")
    p.add_argument("--steps", type=int, default=3000, help="training steps (batches); default 3000")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch; default 32")
    p.add_argument("--optimizer", choices=("adam", "rmsprop"), default="adam", help="default adam")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate; default 3e-3 for adam, 1e-4 for rmsprop (Graves 2014)")
    p.add_argument("--min-lr", type=float, default=None,
                   help="cosine-decay the learning rate from --lr to this over the run")
    p.add_argument("--momentum", type=float, default=0.9, help="rmsprop momentum; default 0.9")
    p.add_argument("--seed", type=int, default=0, help="seeds the model init and the batches; default 0")
    p.add_argument("--clip", type=float, default=10.0,
                   help="clip each gradient element to [-C, C]; 0 turns it off; default 10")
    p.add_argument("--clip-norm", type=float, default=None, help="also clip the global gradient norm")
    p.add_argument("--curriculum", nargs="?", choices=("linear", "bandit"), const="linear", default=None,
                   help="linear (bare --curriculum): short sequences first, max_length grows linearly from "
                        "min_length over the first --curriculum-fraction of training; bandit: Exp3.S picks "
                        "the difficulty (copy: max_length, mqar: num_pairs) that maximises learning progress "
                        "every step (Graves et al. 2017). Default off: on copy the linear schedule let the "
                        "controller settle on a memory-free solution more often than it helped")
    p.add_argument("--no-curriculum", dest="curriculum", action="store_const", const=None,
                   help="no curriculum (the default)")
    p.add_argument("--curriculum-param", default=None,
                   help="the task parameter the curriculum varies; default max_length (bandit: max_length, "
                        "else num_pairs, max_items or max_repeats, the first the task has)")
    p.add_argument("--curriculum-fraction", type=float, default=0.5,
                   help="linear: the share of training the schedule takes; default 0.5")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                   help="write step-000K.safetensors every K steps (final.safetensors is always written)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every this many steps")
    p.add_argument("--eval-size", type=int, default=64, help="sequences in the fixed eval batch; default 64")
    p.add_argument("--target", type=float, default=None,
                   help="stop once the eval metric is this good (e.g. 0 wrong bits)")
    p.add_argument("--out", type=Path, default=None, help="output folder; default runs/<arch>-<task>-seed<S>")
    p.add_argument("--name", default=None, help="a name stored in the checkpoints")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto; default cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_remedy_arguments(p)


def add_remedy_arguments(p: argparse.ArgumentParser) -> None:
    """Remedies for decorative memory (sources in mnemoscope.models.remedies.REMEDIES)."""
    g = p.add_argument_group("remedies", "training options that push a model to use its memory "
                             "(--curriculum and --clip above are remedies too: Graves et al. 2017, "
                             "Collier & Beel 2018)")
    g.add_argument("--bypass-dropout", type=float, default=None, metavar="P",
                   help="drop the controller/non-memory path into the output with probability P per "
                        "sequence while training (stochastic depth on the bypass); ntm, dnc, sequence")
    g.add_argument("--bypass-bottleneck", type=float, default=None, metavar="BETA",
                   help="variational information bottleneck on the bypass (Alemi et al. 2017): the "
                        "controller's / attention blocks' path into the output passes through a Gaussian code "
                        "whose KL to N(0, 1) is added to the loss with weight BETA (logged as bottleneck_kl; "
                        "the code's mean at evaluation); ntm, dnc, sequence with an attention block")
    g.add_argument("--controller-size", type=int, default=None, metavar="N",
                   help="controller width; a small one cannot hold the sequence itself (Santoro et al. 2016)")
    g.add_argument("--memory-init", choices=("constant", "learned", "random"), default=None,
                   help="NTM memory initialisation (default: random). constant 1e-6 is Collier & Beel 2018's "
                        "stabiliser, but with this NTM's all-zero initial weightings every slot then gets the "
                        "same writes and the memory acts as one vector")
    g.add_argument("--dnc-fixes", action="store_true",
                   help="DNC masking, de-allocation and link sharpness (Csordás & Schmidhuber 2019)")
    g.add_argument("--window", type=int, default=None, metavar="W",
                   help="local-attention window of a hybrid; short windows push the memory to train (SWAX)")
    g.add_argument("--slot-routing", choices=("expert_choice", "token_choice"), default=None,
                   help="slot_memory blocks: slots choose their top-k tokens per chunk (expert choice, Zhou et "
                        "al. 2022; the default) or tokens choose slots; sequence")
    g.add_argument("--balance-bias-rate", type=float, default=None, metavar="U",
                   help="token-choice slot routing: loss-free balancing bias step (Wang et al. 2024); sequence")
    g.add_argument("--reconstruction-loss", type=float, default=None, metavar="WEIGHT",
                   help="auxiliary loss: a small decoder predicts earlier inputs from the memory reads "
                        "(Trinh et al. 2018), added with this weight")
    g.add_argument("--reconstruction-horizon", type=int, default=6, metavar="K",
                   help="how many earlier inputs the reconstruction decoder predicts; default 6")


def run(args: argparse.Namespace) -> int:
    import torch

    from mnemoscope.models.registry import architecture
    from mnemoscope.models.tasks import make_task
    from mnemoscope.models.training import TrainConfig, resolve_device, train

    try:
        resolve_device(args.device)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.threads:
        torch.set_num_threads(args.threads)
    for flag in ("steps", "batch_size", "eval_size"):
        if getattr(args, flag) < (0 if flag == "steps" else 1):
            raise CLIError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")

    try:
        cls = architecture(args.arch)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    try:
        make_task(args.task)  # unknown task name: the error lists the known ones
        task_cls = type(make_task(args.task))
        task_params = parse_params(args.task_param, task_cls.Params, f"task {args.task!r}")
        eval_params = parse_params(args.eval_param, task_cls.Params, f"task {args.task!r}")
        task = make_task(args.task, **task_params)
        if not args.eval_param and hasattr(task.params, "min_length") and hasattr(task.params, "max_length"):
            # copy-like tasks draw one length per batch: score the hardest one
            eval_params = {"min_length": task.params.max_length}
        make_task(task.spec(), **eval_params)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc

    given = hf_config_arg(args, task) if args.arch == "hf" else None
    if given is None:
        if args.hf_config is not None:
            raise CLIError(f"--hf-config is for --arch hf, not {args.arch!r}")
        given = parse_params(args.model_param, cls.Config, f"arch {args.arch!r}")
    given.update(remedy_config(args, cls, given))
    config = model_config(args.arch, cls.Config, task, given)
    torch.manual_seed(args.seed)
    try:
        model = cls(cls.Config(**config))
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot build {args.arch!r} with {config}: {exc}") from exc

    schedule = curriculum_schedule(args, task)
    lr = args.lr if args.lr is not None else (3e-3 if args.optimizer == "adam" else 1e-4)
    extra_loss, record = remedy_loss(args, model, task)
    out = args.out or Path("runs") / f"{args.arch}-{args.task}-seed{args.seed}"

    params = sum(p.numel() for p in model.parameters())
    print(f"training {args.arch} ({params:,} parameters, {config}) on {task.spec()}"
          + (f", evaluated with {eval_params}" if eval_params else ""))
    try:
        options = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, seed=args.seed, optimizer=args.optimizer, lr=lr,
            min_lr=args.min_lr, momentum=args.momentum, clip=args.clip or None, clip_norm=args.clip_norm,
            curriculum=schedule, eval_every=args.eval_every, eval_size=args.eval_size, eval_params=eval_params,
            target=args.target, out_dir=out, checkpoint_every=args.checkpoint_every, name=args.name,
            device=args.device, progress=not args.no_progress,
        )
        result = train(model, task, options, extra_loss=extra_loss, record=record,
                       on_eval=_print_eval if args.no_progress else None)
    except (ValueError, FloatingPointError) as exc:
        raise CLIError(str(exc)) from exc

    summary = {
        "arch": args.arch, "config": config, "task": task.spec(), "train": result.config,
        "steps": result.steps, "seconds": result.seconds, "final_metrics": result.final_metrics,
        "checkpoints": [str(p) for p in result.checkpoints], "history": result.history,
    }
    (out / "history.json").write_text(json.dumps(summary, indent=1, default=str))
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.final_metrics.items() if v is not None)
    print(f"{result.steps} steps in {result.seconds:.1f}s: {metrics}")
    print(f"{len(result.checkpoints)} checkpoint(s) in {out}/; the final model: {result.final_checkpoint}")
    print(f"history: {out / 'history.json'}")
    return 0


def curriculum_schedule(args: argparse.Namespace, task):
    """The TrainConfig curriculum that --curriculum asks for (None without it)."""
    from mnemoscope.models.curriculum import BanditCurriculum
    from mnemoscope.models.training import LengthCurriculum

    if args.curriculum == "bandit":
        schedule = BanditCurriculum(param=args.curriculum_param)
        try:
            schedule.resolve(task.params)  # fail now, naming the task's parameters
        except ValueError as exc:
            raise CLIError(f"--curriculum bandit: {exc}") from exc
        return schedule
    if args.curriculum == "linear":
        param = args.curriculum_param or "max_length"
        if not hasattr(task.params, param):
            raise CLIError(f"--curriculum: task {args.task!r} has no parameter {param!r}; "
                           f"it has {[f.name for f in dataclasses.fields(task.params)]}")
        return LengthCurriculum(param=param, fraction=args.curriculum_fraction)
    return None


def hf_config_arg(args: argparse.Namespace, task) -> dict:
    """{"hf_config": ...} of `--arch hf --hf-config FILE`: the file checked as the importer checks a
    directory's config.json, and its vocabulary checked against the task's."""
    from mnemoscope.models.hf import read_hf_config_file
    from mnemoscope.models.importers.hf import task_spec

    if args.hf_config is None:
        raise CLIError("--arch hf needs --hf-config FILE.json (the model's Hugging Face config), e.g. "
                       "models/hf_configs/qwen3_next_tiny.json")
    if args.model_param:
        raise CLIError("--arch hf takes its whole config from --hf-config; edit the file instead of --model-param")
    try:
        hf_config = read_hf_config_file(args.hf_config)
        task_spec(task.spec(), int(hf_config["vocab_size"]))
    except ValueError as exc:
        raise CLIError(f"--hf-config: {exc}") from exc
    return {"hf_config": hf_config}


def remedy_config(args: argparse.Namespace, cls: type, given: dict) -> dict:
    """Config fields set by the remedy options; a clash with --model-param is an error."""
    from mnemoscope.models.remedies import config_remedies

    try:
        wanted = config_remedies(cls.Config, args.arch, bypass_dropout=getattr(args, "bypass_dropout", None),
                                 bypass_bottleneck=getattr(args, "bypass_bottleneck", None),
                                 controller_size=getattr(args, "controller_size", None),
                                 memory_init=getattr(args, "memory_init", None),
                                 dnc_fixes=getattr(args, "dnc_fixes", False), window=getattr(args, "window", None),
                                 slot_routing=getattr(args, "slot_routing", None),
                                 balance_bias_rate=getattr(args, "balance_bias_rate", None))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    for key, value in wanted.items():
        if key in given and given[key] != value:
            raise CLIError(f"--model-param {key}={given[key]} disagrees with the remedy option ({value})")
    return wanted


def remedy_loss(args: argparse.Namespace, model, task) -> tuple:
    """(extra_loss, record) for train(): the reconstruction loss when asked for."""
    weight = getattr(args, "reconstruction_loss", None)
    if weight is None:
        return None, ()
    from mnemoscope.models.remedies import reconstruction_loss

    try:
        loss = reconstruction_loss(model, task, horizon=args.reconstruction_horizon, weight=weight)
    except ValueError as exc:
        raise CLIError(f"--reconstruction-loss: {exc}") from exc
    return loss, loss.sites


def _print_eval(entry: dict) -> None:
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in entry.items() if k != "step" and v is not None)
    print(f"step {entry['step']}: {shown}", flush=True)


def model_config(arch: str, config_cls: type, task, given: dict) -> dict:
    """The arch's quick defaults, then the sizes the task dictates, then the user's values."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    derived = {"input_size": task.input_size, "output_size": task.output_size}
    if "vocab_size" in fields and task.vocab_size is not None:
        derived["vocab_size"] = task.vocab_size
    for key, value in given.items():
        if key in derived and value != derived[key]:
            raise CLIError(f"{key} comes from the task ({derived[key]}); --model-param {key}={value} disagrees")
    defaults = {k: v for k, v in ARCH_DEFAULTS.get(arch, {}).items() if k in fields}
    return {**defaults, **{k: v for k, v in derived.items() if k in fields}, **given}


def parse_params(items: list[str], cls: type, what: str) -> dict:
    """`key=value` strings into a dict, each value converted to the dataclass field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to JSON guessing
        hints = {}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CLIError(f"expected KEY=VALUE, got {item!r}")
        if key not in fields:
            raise CLIError(f"{what} has no parameter {key!r}; it has {sorted(fields)}")
        try:
            out[key] = _convert(raw.strip(), hints.get(key))
        except ValueError as exc:
            raise CLIError(f"{what}: {key}={raw!r}: {exc}") from exc
    return out


def _convert(raw: str, typ) -> Any:
    options = typing.get_args(typ) if typing.get_origin(typ) in (typing.Union, types.UnionType) else (typ,)
    if type(None) in options and raw.lower() in ("none", "null"):
        return None
    for t in options:
        if t is bool:
            if raw.lower() in ("true", "yes", "on", "1"):
                return True
            if raw.lower() in ("false", "no", "off", "0"):
                return False
            raise ValueError("expected true or false")
        if t is int:
            try:
                return int(raw)
            except ValueError:
                if len(options) == 1 or options == (int, type(None)):
                    raise ValueError("expected an integer") from None
        if t is float:
            return float(raw)
        if t is str:
            return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
