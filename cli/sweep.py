"""Running a sweep: train and analyse every point of a sweep file, resumably, on an executor;
then the results table (JSON + CSV) and figures. This is what `mnemoscope sweep run` runs.

    results = run_sweep(load_sweep("sweeps/hybrid-window.toml"))           # local processes
    results = run_sweep(spec, out="/tmp/s", executor="ray", address="ray://head:10001")

The output folder (default `<data_dir>/sweeps/<name>/`, the server's data directory):

    spec.json                       the sweep as validated
    points/<key>.json               one per finished point: its recipe, seed, knobs, reliance
    checkpoints/<train_key>.safetensors (+ .json: training time, steps, final metrics)
    reports/<key>.json              the full report, when the sweep's analyses include "report"
    results.json, results.csv       the table: one row per point (knob columns by path)
    figures.json, <measure>.html    the figures (server/services/sweeps.figures)

Resuming: a point whose points/<key>.json exists is skipped (its key hashes the full recipe,
the seed and mnemoscope's version, plus the evaluation and analysis options), a checkpoint
that exists is analysed rather than retrained; `force=True` redoes everything. Work is
grouped by train_key, so a model evaluated several ways (`eval.` knobs) is trained once.
Every file is written by this process (workers return bytes), atomically, as each unit
finishes: an interrupt loses at most the work in flight.

Training is the zoo build's (`zoo_build.train_recipe`, one torch thread, seeded): the same
point gives the same weights and numbers on either executor.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from mnemoscope.models.sweep_spec import Point, SweepSpec

from .executors import make_executor

RESULTS_FORMAT = 1
# the row fields after the key, seed and knob columns; declared once for JSON and CSV
ROW_FIELDS = ("series", "arch", "verdict", "necessity", "necessity_lo", "necessity_hi",
              "sufficiency", "sufficiency_lo", "sufficiency_hi", "bypass_necessity", "metric_name", "metric", "metric_ablated", "chance",
              "higher_is_better", "prob_change", "memory_share", "steps", "train_seconds", "analyse_seconds",
              "checkpoint", "checkpoint_sha256", "report")


def default_out(spec: SweepSpec) -> Path:
    """`sweeps/<name>/` under the server's data directory (MNEMOSCOPE_DATA_DIR, default .mnemoscope)."""
    from mnemoscope.server.services.sweeps import sweeps_root
    from mnemoscope.server.settings import Settings

    return sweeps_root(Settings().data_dir) / spec.name


# -- files -----------------------------------------------------------------------------------

def _write_atomic(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj: Any) -> None:
    from mnemoscope.models.jsonable import to_jsonable  # NaN -> null: browsers read these files too

    _write_atomic(path, json.dumps(to_jsonable(obj), indent=1, allow_nan=False) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def point_path(out: Path, key: str) -> Path:
    return out / "points" / f"{key}.json"


def checkpoint_path(out: Path, train_key: str) -> Path:
    return out / "checkpoints" / f"{train_key}.safetensors"


# -- one unit of work (runs in a worker) ---------------------------------------------------------

def run_unit(unit: dict) -> dict:
    """Train one recipe (unless its checkpoint bytes come with the unit) and analyse it for
    each of its points. Plain data in and out, so any executor can ship it. A unit that fails
    (a loss that diverges, say) comes back with `error` and no points, so the others go on
    and the next run tries it again."""
    try:
        return _run_unit(unit)
    except Exception as exc:  # noqa: BLE001 - reported by the caller, point by point
        return {"train_key": unit["train_key"], "error": f"{type(exc).__name__}: {exc}", "points": []}


def _run_unit(unit: dict) -> dict:
    import torch

    from . import zoo_build
    from mnemoscope.models.zoo import Recipe

    torch.set_num_threads(1)  # determinism (equal results on every executor), and fair sharing
    recipe = Recipe(**unit["recipe"])
    with tempfile.TemporaryDirectory(prefix="mnemoscope-sweep-") as tmp:
        path = Path(tmp) / f"{recipe.name}.safetensors"
        trained = None
        if unit.get("checkpoint") is None:
            done = zoo_build.train_recipe(recipe, tmp)
            trained = {"seconds": round(done["seconds"], 2), "steps": done["steps"],
                       "final_metrics": done["final_metrics"], "training": done["training"]}
        else:
            path.write_bytes(unit["checkpoint"])
        points = []
        for point in unit["points"]:
            start = time.perf_counter()
            reliance_dict, report = analyse(path, point["eval"], unit["analysis"])
            points.append({"key": point["key"], "reliance": reliance_dict, "report": report,
                           "analyse_seconds": round(time.perf_counter() - start, 2)})
        return {"train_key": unit["train_key"], "checkpoint": path.read_bytes() if trained else None,
                "train": trained, "points": points}


def analyse(path: Path, eval_params: dict, analysis: dict) -> tuple[dict, dict | None]:
    """(the reliance result as JSON, the full report or None), as `mnemoscope analyze` computes
    them on the checkpoint's task with `eval_params` changed."""
    from mnemoscope.analysis import analyze, reliance
    from mnemoscope.models.checkpoints import load_checkpoint
    from mnemoscope.models.jsonable import to_jsonable
    from mnemoscope.models.tasks import make_task

    ckpt = load_checkpoint(path)
    task = make_task(ckpt.meta.task, **eval_params) if eval_params else make_task(ckpt.meta.task)
    samples, seed = analysis["samples"], analysis["seed"]
    if "report" in analysis["run"]:
        report = analyze(ckpt.model, task, samples=samples, seed=seed)
        return report.reliance.to_dict(), to_jsonable(report.to_dict())
    return reliance(ckpt.model, task, task.sample(samples, seed), seed=seed).to_dict(), None


# -- the run ---------------------------------------------------------------------------------

def plan(spec: SweepSpec, out: Path, force: bool = False) -> tuple[list[Point], list[dict]]:
    """(every point, the units of work still to do): pending points grouped by train_key,
    with the checkpoint's bytes when it already exists."""
    points = spec.check()
    pending: dict[str, list[Point]] = {}
    for point in points:
        if force or _read_json(point_path(out, point.key)) is None:
            pending.setdefault(point.train_key, []).append(point)
    units = []
    for train_key, group in pending.items():
        first = group[0]
        ckpt = checkpoint_path(out, train_key)
        units.append({
            "train_key": train_key,
            "recipe": first.zoo_recipe(spec.description).describe(),
            "checkpoint": ckpt.read_bytes() if ckpt.is_file() and not force else None,
            "analysis": first.analysis,
            "points": [{"key": p.key, "eval": p.eval} for p in group],
        })
    return points, units


def run_sweep(spec: SweepSpec, out: str | Path | None = None, *, executor: str = "local", workers: int | None = None,
              address: str | None = None, force: bool = False, progress: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Run every pending point, then write the results; returns results.json's content."""
    from mnemoscope import __version__

    out = Path(out) if out is not None else default_out(spec)
    points, units = plan(spec, out, force)
    by_key = {p.key: p for p in points}
    _write_json(out / "spec.json", spec.model_dump())
    todo = sum(len(u["points"]) for u in units)
    log(f"[sweep] {spec.name}: {len(points)} points ({len(points) - todo} done, {todo} to run, "
        f"{len(units)} to train or analyse) on the {executor} executor -> {out}")
    from tqdm import tqdm

    bar = tqdm(total=len(points), initial=len(points) - todo, desc=spec.name, unit="point", disable=not progress)
    failed: list[dict] = []
    try:
        with make_executor(executor, workers=workers, address=address) as engine:
            for result in engine.map_unordered(run_unit, units, spec.resources.model_dump()):
                if result.get("error"):
                    names = [by_key[p["key"]].describe() for u in units if u["train_key"] == result["train_key"]
                             for p in u["points"]]
                    failed.append({"points": names, "error": result["error"]})
                    log(f"[sweep]   failed: {'; '.join(names)}: {result['error']}")
                    continue
                _save_unit(out, result, by_key, __version__)
                bar.update(len(result["points"]))
                for p in result["points"]:
                    rel = p["reliance"]
                    log(f"[sweep]   {by_key[p['key']].describe()}: {rel.get('verdict')} "
                        f"(necessity {_fmt(_estimate(rel, 'necessity')[0])})")
                write_results(spec, out, points)
    finally:
        bar.close()
        results = write_results(spec, out, points, html=True)
    return {**results, "failed": failed}


def _save_unit(out: Path, result: dict, by_key: dict[str, Point], version: str) -> None:
    ckpt = checkpoint_path(out, result["train_key"])
    if result.get("checkpoint") is not None:  # trained in this unit: checkpoint first, then points
        _write_atomic(ckpt, result["checkpoint"])
        _write_json(ckpt.with_suffix(".json"), result["train"])
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    train = _read_json(ckpt.with_suffix(".json")) or {}
    for p in result["points"]:
        point = by_key[p["key"]]
        report = None
        if p.get("report") is not None:
            report = f"reports/{point.key}.json"
            _write_json(out / report, p["report"])
        _write_json(point_path(out, point.key), {
            "key": point.key, "train_key": point.train_key, "sweep": point.sweep, "knobs": point.knobs,
            "seed": point.seed, "recipe": point.recipe, "eval": point.eval, "analysis": point.analysis,
            "version": version, "reliance": p["reliance"], "train": train, "analyse_seconds": p["analyse_seconds"],
            "checkpoint": ckpt.relative_to(out).as_posix(), "checkpoint_sha256": sha, "report": report,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })


# -- the results table -------------------------------------------------------------------------

def _estimate(reliance: dict, name: str) -> tuple[float | None, float | None, float | None]:
    """(value, lo, hi) of the reliance result's `name` (a {value, ci95} dict after the verdict
    rewrite); necessity falls back to the older `score`/`ci95`."""
    found = reliance.get(name)
    if isinstance(found, dict) and found.get("value") is not None:
        lo, hi = (list(found.get("ci95") or [None, None]) + [None, None])[:2]
        return found["value"], lo, hi
    if isinstance(found, (int, float)):
        return float(found), None, None
    if name == "necessity" and reliance.get("score") is not None:
        lo, hi = (list(reliance.get("ci95") or [None, None]) + [None, None])[:2]
        return reliance["score"], lo, hi
    return None, None, None


def row_of(record: dict, knobs: list[str], x: str | None) -> dict:
    from mnemoscope.server.services.sweeps import series_label

    rel = record.get("reliance") or {}
    nec, suf = _estimate(rel, "necessity"), _estimate(rel, "sufficiency")
    bypass = _estimate((rel.get("components") or {}).get("bypass") or {}, "necessity")  # attention's, in a hybrid
    train = record.get("train") or {}
    row = {"key": record["key"], "seed": record["seed"], **{k: record["knobs"].get(k) for k in knobs}}
    row.update({
        "arch": record["recipe"]["arch"], "verdict": rel.get("verdict"),
        "necessity": nec[0], "necessity_lo": nec[1], "necessity_hi": nec[2],
        "sufficiency": suf[0], "sufficiency_lo": suf[1], "sufficiency_hi": suf[2], "bypass_necessity": bypass[0],
        "metric_name": rel.get("metric_name"), "metric": rel.get("metric_clean"),
        "metric_ablated": rel.get("metric_ablated"), "chance": rel.get("chance"),
        "higher_is_better": rel.get("higher_is_better"), "prob_change": rel.get("prob_change"),
        "memory_share": rel.get("memory_share"), "steps": train.get("steps"), "train_seconds": train.get("seconds"),
        "analyse_seconds": record.get("analyse_seconds"), "checkpoint": record.get("checkpoint"),
        "checkpoint_sha256": record.get("checkpoint_sha256"), "report": record.get("report"),
    })
    row["series"] = series_label(row, knobs, x)
    return row


def columns(knobs: list[str]) -> list[str]:
    return ["key", "seed", *knobs, *ROW_FIELDS]


def write_results(spec: SweepSpec, out: Path, points: list[Point] | None = None, *, html: bool = False) -> dict:
    """results.json, results.csv and figures.json from the point files of the spec's points
    (in grid order); with html=True also one plotly HTML file per figure."""
    from mnemoscope import __version__
    from mnemoscope.server.services.sweeps import figures

    points = spec.points() if points is None else points
    knobs = list(spec.knobs)
    rows = [row_of(record, knobs, spec.x_knob) for p in points
            if (record := _read_json(point_path(out, p.key))) is not None]
    results = {
        "format": RESULTS_FORMAT, "name": spec.name, "description": spec.description, "version": __version__,
        "knobs": knobs, "x": spec.x_knob, "seeds": list(spec.seeds), "analysis": spec.analysis.model_dump(),
        "points_total": len(points), "columns": columns(knobs), "rows": rows,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json(out / "results.json", results)
    _write_atomic(out / "results.csv", to_csv(rows, results["columns"]))
    specs = figures(results)
    _write_json(out / "figures.json", specs)
    if html:
        import plotly.io

        for measure, figure in specs.items():
            # plotly.min.js once beside the pages: they open offline
            plotly.io.write_html(figure, str(out / f"{measure}.html"), include_plotlyjs="directory", auto_open=False)
    return results


def to_csv(rows: list[dict], names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(n) is None else row[n] if isinstance(row.get(n), (str, int, float))
                         else json.dumps(row[n]) for n in names])
    return buffer.getvalue()


# -- the report ------------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _knob(value: Any) -> str:
    """A knob's value as the sweep file gives it (0.001 stays 0.001: rounding could merge two values)."""
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _spread(values: list[float]) -> str:
    """mean (min-max over seeds), or the one value."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ({min(values):.2f}-{max(values):.2f})"


def aggregate(results: dict) -> list[dict]:
    """One entry per knob combination: the seeds, how many agree on each verdict, and the
    measures' mean and range over seeds."""
    groups: dict[str, list[dict]] = {}
    for row in results["rows"]:
        groups.setdefault(json.dumps([row.get(k) for k in results["knobs"]]), []).append(row)
    out = []
    for rows in groups.values():
        verdicts: dict[str, int] = {}
        for r in rows:
            verdicts[str(r.get("verdict"))] = verdicts.get(str(r.get("verdict")), 0) + 1
        out.append({
            "knobs": {k: rows[0].get(k) for k in results["knobs"]}, "seeds": [r["seed"] for r in rows],
            "verdicts": dict(sorted(verdicts.items(), key=lambda kv: -kv[1])),
            "necessity": _spread([r.get("necessity") for r in rows]),
            "sufficiency": _spread([r.get("sufficiency") for r in rows]),
            "metric": _spread([r.get("metric") for r in rows]),
            "metric_name": rows[0].get("metric_name"),
        })
    return out


def markdown_report(results: dict) -> str:
    """The README's table of one sweep, from its results: never typed by hand."""
    knobs = results["knobs"]
    entries = aggregate(results)
    names = {e["metric_name"] for e in entries if e["metric_name"]}
    metric = names.pop() if len(names) == 1 else "metric"  # points on several tasks name theirs per row
    lines = [f"#### Sweep `{results['name']}`", ""]
    if results.get("description"):
        lines += [results["description"], ""]
    lines += [f"{len(results['rows'])} of {results['points_total']} points, seeds {results.get('seeds')}, "
              f"mnemoscope {results.get('version')}; necessity, sufficiency and {metric}: mean over seeds "
              "(min-max); verdicts: how many seeds give each.", ""]
    head = [f"`{k}`" for k in knobs] + ["seeds", "verdicts", "necessity", "sufficiency", metric]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for e in entries:
        n = len(e["seeds"])
        verdicts = ", ".join(f"{v} {c}/{n}" for v, c in e["verdicts"].items())
        measured = e["metric"] if metric != "metric" else f"{(e['metric_name'] or '').replace('_', ' ')} {e['metric']}"
        cells = [_knob(e["knobs"][k]) for k in knobs] + [str(n), verdicts, e["necessity"], e["sufficiency"], measured]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_report(results: dict) -> str:
    lines = [f"{results['name']}: {len(results['rows'])}/{results['points_total']} points"]
    for e in aggregate(results):
        knobs = ", ".join(f"{k}={_knob(v)}" for k, v in e["knobs"].items()) or "-"
        verdicts = ", ".join(f"{v} {c}/{len(e['seeds'])}" for v, c in e["verdicts"].items())
        lines.append(f"  {knobs}: {verdicts}; necessity {e['necessity']}, sufficiency {e['sufficiency']}, "
                     f"{e['metric_name'] or 'metric'} {e['metric']}")
    return "\n".join(lines) + "\n"


__all__ = ["RESULTS_FORMAT", "ROW_FIELDS", "run_sweep", "run_unit", "plan", "write_results", "row_of", "columns",
           "markdown_report", "text_report", "aggregate", "default_out"]
