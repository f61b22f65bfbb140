"""`mnemoscope import pytorch-ntm FILE -o OUT.safetensors`: convert another project's
checkpoint into mnemoscope's self-describing format."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CLIError

FORMATS = ("pytorch-ntm", "hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, help="the checkpoint's origin")
    parser.add_argument("file", help="the checkpoint to convert (read with torch.load(weights_only=True)); "
                        "for hf, a save_pretrained directory (config.json + safetensors)")
    parser.add_argument("-o", "--output", required=True, help="where to write the .safetensors checkpoint")
    parser.add_argument("--task", help="hf: the task the model is analysed on, e.g. mqar")
    parser.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE", help="hf: task parameter")
    parser.add_argument("--wrap", action="store_true", help="hf: keep a Mamba-1 as the transformers module")


def run(args: argparse.Namespace) -> int:
    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.importers.pytorch_ntm import import_file

    src, out = Path(args.file), Path(args.output)
    if args.format == "hf":
        return run_hf(src, out, args)
    if not src.exists():
        raise CLIError(f"{src}: no such file")
    if not src.is_file():
        raise CLIError(f"{src}: not a regular file")
    if out.suffix != ".safetensors":
        raise CLIError(f"output {out} must end in .safetensors")
    try:
        model, meta = import_file(src)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(f"cannot import {src}: {exc}") from exc
    try:
        path = save_checkpoint(
            out, model, task=meta["task"], step=meta["step"], metrics=meta["metrics"],
            name=src.stem, extra={"source": meta["source"], "imported_from": args.format, "source_file": src.name},
        )
    except OSError as exc:
        raise CLIError(f"cannot write {out}: {exc}") from exc
    c = meta["config"]
    print(f"imported {src.name} ({args.format}): ntm, controller {c['controller_size']}, "
          f"memory {c['memory_slots']}x{c['memory_width']}, task {meta['task']['name']}, "
          f"step {meta['step']} -> {path}")
    return 0


def run_hf(src: Path, out: Path, args: argparse.Namespace) -> int:
    from mnemoscope.models.importers.hf import describe, import_hf_checkpoint

    from .analyze import parse_params

    task = {"name": args.task, "params": parse_params(args.task_param)} if args.task else None
    try:
        path, result = import_hf_checkpoint(src, out, task, wrap_mamba=args.wrap)
    except ValueError as exc:
        raise CLIError(f"cannot import {src}: {exc}") from exc
    except OSError as exc:
        raise CLIError(f"cannot write {out}: {exc}") from exc
    print(f"imported {src.name} (hf): {describe(result)} -> {path}")
    return 0
