"""`mnemoscope analyze CHECKPOINT`: does this checkpoint use its memory?

Runs every analysis (ablations, patching, entropy, gradient flow, utilization and the
reliance verdict) on the task stored in the checkpoint, or on `--task`, and prints a
short report, or the full report as JSON with `--json`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import CLIError

DEFAULT_SAMPLES = 32  # the zoo's index is computed with these too (cli/zoo_build.py)
DEFAULT_SEED = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .safetensors checkpoint, or a file an importer recognises (pytorch-ntm)")
    parser.add_argument("--task", metavar="NAME", help="task to analyse on (default: the checkpoint's own task)")
    parser.add_argument("--task-param", metavar="K=V", action="append", default=[],
                        help="override a task parameter, e.g. --task-param max_length=20 (repeatable)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"sequences to analyse (default {DEFAULT_SAMPLES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the task batch (default {DEFAULT_SEED})")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help='run the analyses on this torch device: cpu (default), cuda or cuda:N')


def parse_params(items: list[str]) -> dict:
    """`k=v` strings -> dict; values are JSON when they parse as JSON (numbers, true,
    lists), else strings."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--task-param expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def run(args: argparse.Namespace) -> int:
    import torch

    from mnemoscope.analysis.device import resolve_device
    from mnemoscope.analysis.report import analyze
    from mnemoscope.models.checkpoints import load_checkpoint
    from mnemoscope.models.tasks import make_task

    try:
        device = resolve_device(args.device)  # before loading anything: a missing GPU is the user's first answer
    except ValueError as exc:
        raise CLIError(f"--device: {exc}") from exc
    path = Path(args.checkpoint)
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    if args.samples < 2:
        raise CLIError(f"--samples must be at least 2 (resample ablation swaps sequences), got {args.samples}")
    try:
        ckpt = load_checkpoint(path)
    except (ValueError, OSError) as exc:
        raise CLIError(f"cannot load {path}: {exc}") from exc

    params = parse_params(args.task_param)
    stored = ckpt.meta.task or {}
    if args.task:
        spec = {"name": args.task, "params": stored.get("params", {}) if stored.get("name") == args.task else {}}
    elif stored.get("name"):
        spec = dict(stored)
    else:
        raise CLIError(f"{path} does not say which task it was trained on; pass --task NAME")
    try:
        task = make_task(spec, **params)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"bad task: {exc}") from exc

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    try:
        report = analyze(ckpt.model.to(device), task, samples=args.samples, seed=args.seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        json.dump(report.to_dict(), sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print(f"checkpoint: {path} (step {ckpt.meta.step})")
        print(report.to_text())
    return 0
