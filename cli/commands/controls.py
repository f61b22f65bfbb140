"""`mnemoscope controls`: build the control suite (models/controls.py) or list it.

    mnemoscope controls build                               # every control, seeds 0 1 2
    mnemoscope controls build --only ntm linear --seeds 0   # by family, kind or name
    mnemoscope controls list

Each control is trained by the zoo's machinery (cli/zoo_build.py's `train_recipe`, one
thread, deterministic) and analysed with the reliance verdict alone; `index.json` gets
one entry per control, written after each so an interrupted build keeps what it made.
`bench/calibration.py` prints the confusion matrix from the committed checkpoints.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..errors import CLIError

CONTROLS_FORMAT = 1
BUILD_SAMPLES = 64  # sequences the build's verdict is computed on (the bench and tests recompute)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="controls_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="train the controls and write index.json",
                           description="train the control suite from its recipes and write index.json")
    build.add_argument("--only", nargs="+", metavar="NAME", default=None,
                       help="just these controls, families or kinds (other entries of index.json are kept)")
    build.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2)")
    build.add_argument("--out", type=Path, default=None,
                       help="output folder (default: the installed package's controls/ folder)")
    show = sub.add_parser("list", help="the controls with their truth and built verdicts")
    show.add_argument("--dir", type=Path, default=None, help="controls folder (default: the bundled one)")


def build_controls(out_dir: Path | None = None, only=None, seeds=None, log=print) -> dict:
    from mnemoscope.models import controls

    from ..zoo_build import analyze_numbers, train_recipe

    out = Path(out_dir) if out_dir is not None else controls.default_controls_dir()
    out.mkdir(parents=True, exist_ok=True)
    chosen = controls.select(only, tuple(seeds) if seeds else controls.SEEDS)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    entries = {e["name"]: e for e in index.get("controls", [])}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for c in chosen:
            start = time.perf_counter()
            done = train_recipe(c.recipe, out)
            path = out / f"{c.name}.safetensors"
            numbers = analyze_numbers(path, samples=BUILD_SAMPLES, seed=0, full=False)
            entries[c.name] = {"name": c.name, "file": path.name, "family": c.family, "kind": c.kind,
                               "seed": c.seed, "truth": {"verdict": c.verdict, "warning": c.warning},
                               "arch": c.recipe.arch, "task": c.recipe.task, "cut": c.recipe.config.get("cut", "none"),
                               "train": c.recipe.train, "steps": done["steps"],
                               "train_seconds": round(done["seconds"], 1), **numbers}
            rel = numbers["reliance"]
            log(f"[controls] {c.name}: {rel['verdict']} {rel['warnings']} (truth {c.verdict} {c.warning or ''}; "
                f"{numbers['metric']['name']} {numbers['metric']['clean']:.3g}, {done['steps']} steps, "
                f"{time.perf_counter() - start:.0f}s)")
            order = {x.name: i for i, x in enumerate(controls.controls())}
            index = {"format": CONTROLS_FORMAT, "torch": torch.__version__, "threads": 1,
                     "analyze": {"samples": BUILD_SAMPLES, "seed": 0},
                     "missing": {f.name: f.missing for f in controls.FAMILIES if f.missing},
                     "controls": sorted(entries.values(), key=lambda e: order.get(e["name"], len(order)))}
            index_path.write_text(json.dumps(index, indent=1) + "\n")
    finally:
        torch.set_num_threads(threads)
    return index


def run(args: argparse.Namespace) -> int:
    from mnemoscope.models import controls

    if args.controls_command == "list":
        try:
            index = controls.load_index(args.dir)
        except FileNotFoundError as exc:
            raise CLIError(str(exc)) from exc
        for e in index["controls"]:
            rel = e["reliance"]
            print(f"{e['file']:<34} truth {e['truth']['verdict'] or '-':<12} built {rel['verdict']:<12} "
                  f"{','.join(rel['warnings']) or '-'}")
        return 0
    try:
        build_controls(args.out, args.only, args.seeds)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    except OSError as exc:
        raise CLIError(f"cannot write the controls: {exc}") from exc
    return 0
