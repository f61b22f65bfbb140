"""`mnemoscope sweep`: reliance curves over a knob, trained and analysed point by point.

    mnemoscope sweep run sweeps/hybrid-window.toml                       # local processes
    mnemoscope sweep run FILE --executor ray [--ray-address ray://head:10001]
    mnemoscope sweep run FILE --force                                    # redo the points done
    mnemoscope sweep report FILE_OR_FOLDER ... [--markdown]              # the table, over seeds

The sweep file format is models/sweep_spec.py's; the runner is cli/sweep.py. Results go to
`sweeps/<name>/` under the data directory (`--data-dir`, MNEMOSCOPE_DATA_DIR, default
.mnemoscope), where `mnemoscope serve` lists them (GET /api/sweeps, the dashboard's Sweeps page).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import CLIError
from ..executors import EXECUTORS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="train and analyse every point of a sweep file (resumable)",
                         description="train and analyse every point of a sweep file; points already done are skipped")
    run.add_argument("file", type=Path, help="the sweep file (TOML)")
    _add_place(run)
    run.add_argument("--executor", choices=EXECUTORS, default="local",
                     help="local: processes on this machine (default); ray: Ray tasks (pip install 'mnemoscope[ray]')")
    run.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="a running Ray cluster (e.g. ray://head:10001); default: start a local instance")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="parallel points (local processes, or a local Ray instance's CPUs); default: the CPUs here")
    run.add_argument("--force", action="store_true", help="redo the points already done (and retrain)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    report = sub.add_parser("report", help="a sweep's results over seeds, as text or the README's Markdown",
                            description="a sweep's results over seeds, as text or the README's Markdown")
    report.add_argument("sweeps", nargs="+", type=Path, metavar="FILE_OR_FOLDER",
                        help="sweep files (their default output folder) or output folders")
    _add_place(report)
    report.add_argument("--markdown", action="store_true", help="Markdown tables (the README's)")


def _add_place(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None,
                        help="the sweep's folder (default: sweeps/<name>/ under the data directory)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the server's data directory (default: MNEMOSCOPE_DATA_DIR or .mnemoscope)")


def _spec(path: Path):
    from mnemoscope.models.sweep_spec import SweepError, load_sweep

    try:
        return load_sweep(path)
    except SweepError as exc:
        raise CLIError(str(exc)) from exc


def _folder(spec, args: argparse.Namespace) -> Path:
    from mnemoscope.cli.sweep import default_out

    if args.out is not None:
        return args.out
    if args.data_dir is not None:
        os.environ["MNEMOSCOPE_DATA_DIR"] = str(args.data_dir)  # what Settings() reads
    return default_out(spec)


def run(args: argparse.Namespace) -> int:
    if args.sweep_command == "run":
        return _run(args)
    return _report(args)


def _run(args: argparse.Namespace) -> int:
    from mnemoscope.cli.sweep import run_sweep
    from mnemoscope.models.sweep_spec import SweepError

    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be at least 1, got {args.workers}")
    if args.ray_address and args.executor != "ray":
        raise CLIError("--ray-address goes with --executor ray")
    spec = _spec(args.file)
    out = _folder(spec, args)
    try:
        results = run_sweep(spec, out, executor=args.executor, workers=args.workers, address=args.ray_address,
                            force=args.force, progress=not args.no_progress)
    except SweepError as exc:
        raise CLIError(str(exc)) from exc
    except RuntimeError as exc:
        if "needs Ray" in str(exc):
            raise CLIError(str(exc)) from exc
        raise
    print(f"{len(results['rows'])} of {results['points_total']} points in {out}/ "
          f"(results.json, results.csv, figures)")
    if results["failed"]:
        print(f"{sum(len(f['points']) for f in results['failed'])} point(s) failed (see above); "
              "running the command again retries them")
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from mnemoscope.cli.sweep import markdown_report, text_report
    from mnemoscope.server.services.sweeps import read_results

    parts = []
    for given in args.sweeps:
        folder = given if given.is_dir() else _folder(_spec(given), args)
        results = read_results(folder)
        if results is None:
            raise CLIError(f"{folder}: no results.json (run `mnemoscope sweep run FILE` first)")
        parts.append(markdown_report(results) if args.markdown else text_report(results))
    print("\n".join(parts), end="")
    return 0
