"""Sweeps under the data directory: `<data_dir>/sweeps/<name>/results.json`, written by
`mnemoscope sweep run` (cli/sweep.py), listed and served read-only, with their figures.

The figures are derived here from the results table, never stored separately as the truth:
the command line writes the same specs (`figures(results)`) next to its results for offline
use, and the server recomputes them from results.json on each request, so a sweep still
running shows its points so far.

A figure is a plotly figure as plain JSON (`{"data": [...], "layout": {...}}`): the measure
against the x knob, one line per combination of the other knobs (the mean over seeds), each
seed a point with its 95% interval.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

from mnemoscope.models.sweep_spec import NAME_PATTERN

from ..errors import NotFound
from ..store import Store

SWEEPS_FOLDER = "sweeps"
RESULTS_FILE = "results.json"
CHECKPOINTS_FOLDER = "checkpoints"
# measure -> (row field, its interval's row fields or None, axis title); "metric" is titled by the task
MEASURES: dict[str, tuple[str, tuple[str, str] | None, str]] = {
    "necessity": ("necessity", ("necessity_lo", "necessity_hi"), "memory necessity (reliance)"),
    "sufficiency": ("sufficiency", ("sufficiency_lo", "sufficiency_hi"), "memory sufficiency"),
    "metric": ("metric", None, "task metric"),
}
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22")
_CHECKPOINT_FILE = re.compile(r"^[0-9a-f]{16}\.safetensors$")


def sweeps_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / SWEEPS_FOLDER


def read_results(folder: Path) -> dict | None:
    """A sweep folder's results.json, or None when it has none (or it is being replaced)."""
    try:
        results = json.loads((folder / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and isinstance(results.get("rows"), list) else None


def summary(sweep_id: str, results: dict) -> dict:
    return {
        "id": sweep_id,
        "name": results.get("name", sweep_id),
        "description": results.get("description", ""),
        "knobs": list(results.get("knobs", [])),
        "x": results.get("x"),
        "seeds": list(results.get("seeds", [])),
        "points_total": int(results.get("points_total", 0)),
        "points_done": len(results["rows"]),
        "version": results.get("version"),
        "updated_at": results.get("updated_at"),
    }


def list_sweeps(data_dir: str | Path) -> list[dict]:
    root = sweeps_root(data_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and re.match(NAME_PATTERN, p.name)):
        results = read_results(folder)
        if results is not None:
            out.append(summary(folder.name, results))
    return out


def sweep_folder(data_dir: str | Path, sweep_id: str) -> Path:
    if not re.match(NAME_PATTERN, sweep_id or ""):
        raise NotFound(f"no sweep {sweep_id!r}")  # never a path outside the sweeps folder
    return sweeps_root(data_dir) / sweep_id


def get_sweep(data_dir: str | Path, sweep_id: str, store: Store | None = None) -> dict:
    """The summary, the results table (each row with `checkpoint_id` when the same bytes are
    in the store, so the dashboard can open it) and the figures."""
    results = read_results(sweep_folder(data_dir, sweep_id))
    if results is None:
        raise NotFound(f"no sweep {sweep_id!r} under the data directory (run `mnemoscope sweep run FILE`)")
    rows = [dict(row) for row in results["rows"]]
    for row in rows:
        record = store.get_checkpoint_by_sha(row["checkpoint_sha256"]) if store and row.get("checkpoint_sha256") else None
        row["checkpoint_id"] = record["id"] if record else None
    return {**summary(sweep_id, results), "columns": list(results.get("columns", [])), "rows": rows,
            "figures": figures(results)}


def checkpoint_file(data_dir: str | Path, sweep_id: str, filename: str) -> Path:
    path = sweep_folder(data_dir, sweep_id) / CHECKPOINTS_FOLDER / filename
    if not _CHECKPOINT_FILE.match(filename or "") or not path.is_file():
        raise NotFound(f"sweep {sweep_id!r} has no checkpoint {filename!r}")
    return path


# -- figures ---------------------------------------------------------------------------------

def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series_label(row: dict, knobs: Iterable[str], x: str | None) -> str:
    """The line a row belongs to: the values of the knobs other than x."""
    parts = [f"{k.rsplit('.', 1)[-1]}={_label(row.get(k))}" for k in knobs if k != x]
    return ", ".join(parts) or "all"


def figures(results: dict) -> dict[str, dict]:
    """measure -> plotly figure JSON, for every measure some row has a value of."""
    rows, knobs = results.get("rows", []), list(results.get("knobs", []))
    x = results.get("x") or "seed"
    xs = [row.get(x) for row in rows]
    numeric = bool(xs) and all(_is_number(v) for v in xs)
    categories = list(dict.fromkeys(_label(v) for v in xs))
    log_x = numeric and min(xs) > 0 and max(xs) / min(xs) >= 16
    metric_name = next((r.get("metric_name") for r in rows if r.get("metric_name")), None)
    out: dict[str, dict] = {}
    for measure, (field, interval, title) in MEASURES.items():
        if not any(_is_number(r.get(field)) for r in rows):
            continue
        traces = []
        lines: dict[str, list[dict]] = {}
        for row in rows:
            lines.setdefault(series_label(row, knobs, x), []).append(row)
        for i, (label, members) in enumerate(lines.items()):
            colour = _COLOURS[i % len(_COLOURS)]
            members = [r for r in members if _is_number(r.get(field))]
            at = [r.get(x) if numeric else _label(r.get(x)) for r in members]
            point = {
                "type": "scatter", "mode": "markers", "name": f"{label} (seeds)", "legendgroup": label,
                "showlegend": False, "x": at, "y": [r[field] for r in members],
                "marker": {"color": colour, "size": 7, "opacity": 0.6},
                "text": [f"seed {r.get('seed')}: {r.get('verdict')}" for r in members],
                "hovertemplate": "%{text}<br>" + x + "=%{x}<br>" + measure + "=%{y:.3f}<extra>" + label + "</extra>",
            }
            if interval:
                lo, hi = interval
                point["error_y"] = {
                    "type": "data", "symmetric": False, "color": colour, "thickness": 1, "width": 3,
                    "array": [max(0.0, (r.get(hi) if _is_number(r.get(hi)) else r[field]) - r[field]) for r in members],
                    "arrayminus": [max(0.0, r[field] - (r.get(lo) if _is_number(r.get(lo)) else r[field]))
                                   for r in members],
                }
            means: dict[Any, list[float]] = {}
            for where, r in zip(at, members):
                means.setdefault(where, []).append(r[field])
            order = sorted(means) if numeric else [c for c in categories if c in means]
            mean = {
                "type": "scatter", "mode": "lines+markers", "name": label, "legendgroup": label,
                "x": order, "y": [sum(means[k]) / len(means[k]) for k in order],
                "line": {"color": colour, "width": 2}, "marker": {"color": colour, "size": 9, "symbol": "diamond"},
                "hovertemplate": x + "=%{x}<br>mean " + measure + "=%{y:.3f}<extra>" + label + "</extra>",
            }
            traces += [point, mean]
        y_title = f"{metric_name} (task metric)" if measure == "metric" and metric_name else title
        layout = {
            "title": {"text": f"{results.get('name', '')}: {y_title} against {x}"},
            "xaxis": {"title": {"text": x}, "gridcolor": "#e5e5e5", **({"type": "log"} if log_x else {}),
                      **({"tickvals": sorted(set(xs))} if numeric and len(set(xs)) <= 12 else {}),
                      **({} if numeric else {"type": "category", "categoryorder": "array", "categoryarray": categories})},
            "yaxis": {"title": {"text": y_title}, "gridcolor": "#e5e5e5", **({"range": [-0.05, 1.05]} if interval else {})},
            "legend": {"title": {"text": "mean over seeds"}},
            "plot_bgcolor": "white",
            "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        }
        out[measure] = {"data": traces, "layout": layout}
    return out


__all__ = ["SWEEPS_FOLDER", "RESULTS_FILE", "MEASURES", "sweeps_root", "read_results", "list_sweeps", "get_sweep",
           "checkpoint_file", "figures", "series_label"]
