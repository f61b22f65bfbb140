"""`mnemoscope zoo`: rebuild the bundled model zoo from its recipes, or list it.

    mnemoscope zoo build                          # every recipe into the package's zoo/ folder
    mnemoscope zoo build --out /tmp/zoo --only ntm-copy-short-bypass
    mnemoscope zoo list                           # what each checkpoint shows, its verdict and score
    mnemoscope zoo reanalyze                      # recompute index.json's numbers, no retraining
    mnemoscope zoo seeds                          # each recipe's verdict over the zoo sweep's seeds
    mnemoscope zoo findings                       # the README's claims table, from the zoo sweep's results

Recipes live in models/zoo.py; the build (cli/zoo_build.py) trains each one from its seed on
the CPU (one thread), analyses every checkpoint as `mnemoscope analyze` does and writes index.json.
Every recipe is also a point of the zoo sweep (sweeps/zoo.toml, seeds 0-2): `zoo seeds` puts
its results (`mnemoscope sweep run sweeps/zoo.toml`, committed in sweeps/results/zoo/) into
the index, per recipe: how many seeds agree with the committed checkpoint's verdict and the
spread of the scores.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="retrain the zoo from its recipes and write index.json",
                           description="retrain the zoo from its recipes and write index.json")
    build.add_argument("--out", type=Path, default=None,
                       help="output folder (default: the installed package's zoo/ folder)")
    build.add_argument("--only", nargs="+", metavar="NAME", default=None,
                       help="just these recipes (the other entries of an existing index.json are kept)")
    build.add_argument("--progress", action="store_true", help="show a progress bar while training")
    again = sub.add_parser("reanalyze", help="recompute index.json's numbers from the checkpoints (no retraining)",
                           description="recompute every index entry's verdict and numbers from its checkpoint, "
                                       "as `mnemoscope analyze` does now; the models are not retrained")
    again.add_argument("--dir", type=Path, default=None, help="zoo folder (default: the bundled zoo)")
    seeds = sub.add_parser("seeds", help="put the zoo sweep's verdicts over seeds into index.json",
                           description="each recipe's verdict over the seeds of the zoo sweep (sweeps/zoo.toml): "
                                       "how many seeds agree, and the spread of necessity and sufficiency")
    seeds.add_argument("--results", type=Path, default=None, metavar="FOLDER",
                       help="the zoo sweep's results folder (default: the committed sweeps/results/zoo/)")
    seeds.add_argument("--dir", type=Path, default=None, help="zoo folder (default: the bundled zoo)")
    findings = sub.add_parser("findings", help="the README's findings table, from the zoo sweep's results",
                              description="each claim of the README's findings with its recipes' verdicts over "
                                          "seeds, read from the zoo sweep's results (Markdown)")
    findings.add_argument("--results", type=Path, default=None, metavar="FOLDER",
                          help="the zoo sweep's results folder (default: the committed sweeps/results/zoo/)")
    show = sub.add_parser("list", help="the zoo's checkpoints with their verdicts",
                          description="the zoo's checkpoints with their verdicts")
    show.add_argument("--dir", type=Path, default=None, help="zoo folder (default: the bundled zoo)")
    show.add_argument("--recipes", action="store_true", help="list the recipes instead")
    show.add_argument("--markdown", action="store_true", help="the README's table, as Markdown")


def run(args: argparse.Namespace) -> int:
    from mnemoscope.models import zoo

    if args.zoo_command == "list":
        if args.recipes:
            for r in zoo.recipes():
                remedies = ", ".join(f"{k}={v}" for k, v in r.remedies.items()) or "-"
                print(f"{r.name:<36} {r.arch:<9} {r.task['name']:<19} {r.train['steps']:>5} steps  remedies: {remedies}")
            return 0
        try:
            index = zoo.load_index(args.dir)
        except FileNotFoundError as exc:
            raise CLIError(str(exc)) from exc
        if args.markdown:
            print(markdown_table(index))
            layers = layers_table(index)
            if layers:
                print("\n" + layers)
            return 0
        for e in index["checkpoints"]:
            m, rel = e["metric"], e["reliance"]
            print(f"{e['file']:<48} {rel['verdict']:<11} score {rel['score']:.2f}  "
                  f"{m['name']} {m['clean']:.3g} (chance {m['chance']:.3g})")
        return 0

    if args.zoo_command == "seeds":
        return _seeds(args)

    if args.zoo_command == "findings":
        print(findings_table(_results(args.results)))
        return 0

    if args.zoo_command == "reanalyze":
        from ..zoo_build import reanalyze_zoo

        try:
            reanalyze_zoo(args.dir)
        except (OSError, ValueError, KeyError) as exc:
            raise CLIError(f"cannot reanalyze the zoo: {exc}") from exc
        return 0

    try:
        for name in args.only or ():
            zoo.get_recipe(name)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    from ..zoo_build import build_zoo

    start = time.perf_counter()
    try:
        index = build_zoo(args.out, only=args.only, progress=args.progress)
    except OSError as exc:
        raise CLIError(f"cannot write the zoo: {exc}") from exc
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    out = args.out or zoo.default_zoo_dir()
    total = sum((out / e["file"]).stat().st_size for e in index["checkpoints"])
    print(f"[zoo] {len(index['checkpoints'])} checkpoints ({total / 1e6:.2f} MB) in {out}; "
          f"built in {time.perf_counter() - start:.0f}s")
    return 0


def _results(folder: Path | None) -> dict:
    from mnemoscope.server.services.sweeps import read_results

    from ..zoo_build import default_seed_results

    folder = folder or default_seed_results()
    results = read_results(folder)
    if results is None:
        raise CLIError(f"{folder}: no results.json; run `mnemoscope sweep run sweeps/zoo.toml` first")
    return results


def _seeds(args: argparse.Namespace) -> int:
    import json

    from mnemoscope.models import zoo

    from ..zoo_build import attach_seeds

    results = _results(args.results)
    try:
        index = zoo.load_index(args.dir)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    attach_seeds(index, results)
    path = Path(args.dir or zoo.default_zoo_dir()) / "index.json"
    path.write_text(json.dumps(index, indent=1) + "\n")
    for e in index["checkpoints"]:
        if e.get("seeds"):
            print(f"{e['recipe']:<36} {e['reliance']['verdict']:<11} {_agreement(e['seeds'])}")
    return 0


def _agreement(seeds: dict | None) -> str:
    """`3/3 (0.74-0.79)`: seeds that give the committed checkpoint's verdict, and necessity's range."""
    if not seeds:
        return "-"
    nec = seeds.get("necessity")
    spread = f" ({nec['min'] + 0.0:.2f}-{nec['max'] + 0.0:.2f})" if nec else ""
    return f"{seeds['agree']}/{seeds['n']}{spread}"


def markdown_table(index: dict) -> str:
    """One row per final checkpoint; a training series as one line per run under the table."""
    rows = ["| checkpoint | remedy | metric (chance) | verdict (stability) | seeds agreeing (necessity over seeds) | "
            "memory necessity (95% CI) | memory sufficiency (95% CI) | bypass necessity (95% CI) | warnings | "
            "what it shows |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in index["checkpoints"]:
        if not e["final"]:
            continue
        m, rel = e["metric"], e["reliance"]
        remedy = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in e["remedies"].items()) or "-"
        bypass = (rel.get("bypass") or {}).get("necessity")
        rows.append(f"| `{e['name']}` | {remedy} | {m['name'].replace('_', ' ')} {m['clean']:.3g} ({m['chance']:.3g}) | "
                    f"**{rel['verdict']}** ({rel.get('stability', 1.0):.2f}) | {_agreement(e.get('seeds'))} | "
                    f"{_estimate(rel.get('necessity'))} | "
                    f"{_estimate(rel.get('sufficiency'))} | {_estimate(bypass)} | "
                    f"{', '.join(rel.get('warnings') or []) or '-'} | {e['shows']} |")
    series: dict[str, list[dict]] = {}
    for e in index["checkpoints"]:
        if e["series"]:
            series.setdefault(e["series"], []).append(e)
    for name, run in series.items():
        run = sorted(run, key=lambda e: e["step"])
        steps = ", ".join(f"{e['step']}: {e['reliance']['score'] + 0.0:.2f} ({e['metric']['clean']:.3g})" for e in run)
        verdicts: list[str] = []
        for e in run:
            if not verdicts or verdicts[-1] != e["reliance"]["verdict"]:
                verdicts.append(e["reliance"]["verdict"])
        rows.append(f"\nTraining series `{name}`, step: reliance score ({run[0]['metric']['name'].replace('_', ' ')}): "
                    f"{steps}; verdicts: {' -> '.join(verdicts)}.")
    return "\n".join(rows)


def layers_table(index: dict) -> str:
    """The final checkpoints with per-layer necessity (layered models): which layers the task needs.
    "" when none has them (entries analysed before the per-layer rows existed have none)."""
    rows = []
    for e in index["checkpoints"]:
        layers = e["reliance"].get("layers") if e["final"] else None
        if not layers:
            continue
        m, params = e["metric"], (e.get("task") or {}).get("params") or {}
        task = f"{e['task']['name']} ({', '.join(f'{k} {v}' for k, v in params.items() if k != 'power_a')})"
        parts = ", ".join(f"{r['layer']} {r['kind']}" for r in layers)
        needed = "; ".join(f"layer {r['layer']} {r['kind']} {_estimate(r['necessity'])}" for r in layers if r["needed"])
        rows.append(f"| `{e['name']}` | {e.get('model_type') or e['arch']}: {parts} | {task} | {m['name'].replace('_', ' ')} {m['clean']:.3g} "
                    f"({m['chance']:.3g}) | **{e['reliance']['verdict']}** | {needed or 'none on its own'} |")
    if not rows:
        return ""
    return "\n".join(["| checkpoint | architecture (layer: mixer) | task | metric (chance) | verdict | "
                      "layers needed (necessity alone, 95% CI) |", "| --- | --- | --- | --- | --- | --- |", *rows])


def _estimate(est: dict | None) -> str:
    """`0.77 (0.67-0.88)`, or `-` for a component the model does not have."""
    if not est or est.get("value") is None:
        return "-"
    lo, hi = (x + 0.0 for x in est["ci95"])  # no "-0.00"
    return f"{est['value'] + 0.0:.2f} ({lo:.2f}-{hi:.2f})"


# -- the README's findings: each claim, the recipes it rests on, and how to read their seeds ---------
# (claim, recipes, what decides it: recipe -> the verdict all its seeds must give; None: the
# numbers are the finding), the command that rebuilds the checkpoints. The wording is the
# claim's; every verdict count and number in the table is read from the results.
FINDINGS = (
    ("**Controller bypass**: a controller that can solve the task alone leaves its memory decorative, and "
     "bypass dropout or a small controller makes it functional (Santoro et al. 2016)",
     {"ntm-copy-big-controller": "decorative", "ntm-copy-bypass-dropout": "functional",
      "ntm-copy-small-controller": "functional"},
     "--only ntm-copy-big-controller ntm-copy-bypass-dropout ntm-copy-small-controller"),
    ("**Short windows force memory use** (SWAX, Cabannes et al. 2025): memory necessity is higher with a "
     "4-token window than with one covering the sequence",
     {"hybrid-wide-window": None, "hybrid-short-window": None}, "--only hybrid-wide-window hybrid-short-window"),
    ("**Delta rules beat plain linear attention on recall at a fixed state size** (DeltaNet, Yang et al. 2024; "
     "Gated DeltaNet, Yang et al. 2025; MQAR, Arora et al. 2023)",
     {"mqar-linear-attention": None, "mqar-deltanet": None, "mqar-gated-deltanet": None},
     "--only mqar-linear-attention mqar-deltanet mqar-gated-deltanet"),
    ("**An auxiliary reconstruction loss raises reliance** (Trinh et al. 2018): with it the big-controller NTM "
     "would turn functional",
     {"ntm-copy-big-controller": "decorative", "ntm-copy-reconstruction": "functional"},
     "--only ntm-copy-big-controller ntm-copy-reconstruction"),
)


def findings_table(results: dict) -> str:
    """One row per claim: its recipes' verdicts over seeds and their spread, and whether the
    claim holds over every seed, does not, or has not run on 3 seeds yet."""
    from ..sweep import aggregate

    by_recipe = {e["knobs"]["recipe"]: e for e in aggregate(results)}
    rows = ["| claim | over seeds (verdicts; memory necessity and the task metric: mean, min-max) | "
            "at this scale | rebuild the seed-0 checkpoints |", "| --- | --- | --- | --- |"]
    for claim, wants, only in FINDINGS:
        seen = [_seen(name, by_recipe.get(name)) for name in wants]
        rows.append(f"| {claim} | {'; '.join(seen)} | {_holds(wants, by_recipe)} | "
                    f"`mnemoscope zoo build --out /tmp/zoo {only}` |")
    return "\n".join(rows)


def _seen(name: str, entry: dict | None) -> str:
    if entry is None:
        return f"`{name}`: no seed run yet"
    n = len(entry["seeds"])
    verdicts = ", ".join(f"**{v}** {c}/{n}" for v, c in entry["verdicts"].items())
    metric = (entry["metric_name"] or "metric").replace("_", " ")
    return f"`{name}`: {verdicts}; necessity {entry['necessity']}, {metric} {entry['metric']}"


def _holds(wants: dict, by_recipe: dict) -> str:
    short = [f"{name} {len(by_recipe[name]['seeds']) if name in by_recipe else 0}/3" for name in wants
             if name not in by_recipe or len(by_recipe[name]["seeds"]) < 3]
    if short:
        return f"**not yet over 3 seeds** ({', '.join(short)} seeds run): no claim either way"
    split = [name for name in wants if len(by_recipe[name]["verdicts"]) > 1]
    if split:
        return f"**does not hold over seeds**: the seeds of {', '.join(split)} disagree on the verdict"
    decided = {name: want for name, want in wants.items() if want is not None}
    if not decided:
        return "3 of 3 seeds each, every seed the same verdict: read the claim off the necessity and metric ranges"
    wrong = [name for name, want in decided.items() if next(iter(by_recipe[name]["verdicts"])) != want]
    if wrong:
        return f"**does not reproduce** over 3 seeds: {', '.join(wrong)} not as the claim says"
    return "**reproduces** over 3 seeds: every seed gives the claimed verdict"

