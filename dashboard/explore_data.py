"""Explore's data shaping: which sites to trace, and a trace answer turned into what the
page keeps (the per-step "bundle" the browser scrubs, the memory matrix, the entropy
series, the export).

Only reshaping, rounding and selection happen here: every number is the API's, the
normalised entropy included (the trace carries the engine's value for each
distribution site, `sites[name]["entropy"]`).

Stacked models (sequence models and Hugging Face models both name their sites
`layers.{i}.*`) are drawn one layer at a time: `layer_choices` lists the layers with
something to draw, and the sites traced, the heads drawn and the entropy lines are the
chosen layer's (one head, or all of them as small multiples).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .components import WEIGHT_FLOOR, fmt

MAX_PANELS = 16  # heatmap subplots per figure (and entropy lines per role); more heads are summarised in a note
MAX_MATRIX_VALUES = 400_000  # T x slots x width sent to the browser for the per-step matrix
MAX_ATTENTION_VALUES = 600_000
# A trace is asked for at about the heatmaps' width in pixels: longer sequences come back
# max-pooled into bins (server-side), so the first figure of T = 4096 is as light as T = 512
FIGURE_POINTS = 512
# ... and a query x key attention panel (about 460 px tall, both axes pooled) at half that:
# 256 x 256 cells is two pixels a cell, a quarter of the data
ATTENTION_POINTS = 256


def figure_points(specs: Sequence[Mapping[str, Any]], layer: int | None = None) -> int:
    """`max_points` for the first trace: the attention panel's where one is drawn."""
    return ATTENTION_POINTS if site_roles(specs, layer)["attention"] else FIGURE_POINTS
ROLES_DRAWN = ("read", "write", "attention")  # roles with one heatmap per head


# -- which sites to ask for ---------------------------------------------------------------

LAYER = re.compile(r"^layers\.(\d+)\.(\w+)")


def layer_of(name: str) -> int | None:
    """`layers.2.attention.pattern` -> 2; None for a site outside the stack."""
    match = LAYER.match(name or "")
    return int(match.group(1)) if match else None


def head_count(spec: Mapping[str, Any]) -> int:
    """How many heads a site has (1 without a head axis)."""
    axes, shape = list(spec.get("axes") or []), list(spec.get("shape") or [])
    if "head" in axes and axes.index("head") < len(shape) and isinstance(shape[axes.index("head")], int):
        return shape[axes.index("head")]
    return 1


def layer_choices(specs: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The layers of a stacked model that have something to draw, in order:
    {"layer", "label" ("layer 2 · attention"), "heads"}; [] for a model without layers."""
    roles = site_roles(specs)
    drawn = {name for names in roles.values() for name in names}
    by_name = {s.get("name"): s for s in specs}
    layers: dict[int, dict] = {}
    for name in drawn:
        i = layer_of(name)
        if i is None:
            continue
        entry = layers.setdefault(i, {"layer": i, "parts": set(), "heads": 1})
        entry["parts"].add(LAYER.match(name).group(2))
        entry["heads"] = max(entry["heads"], head_count(by_name[name]))
    return [{"layer": i, "label": f"layer {i} · {', '.join(sorted(e['parts']))}", "heads": e["heads"]}
            for i, e in sorted(layers.items())]


def site_roles(specs: Sequence[Mapping[str, Any]], layer: int | None = None) -> dict[str, list[str]]:
    """Group the model's sites by the panel that draws them, by kind and axes only: of
    every layer, or of `layer` only (sites outside the stack stay)."""
    roles: dict[str, list[str]] = {"read": [], "write": [], "slots": [], "matrix": [], "attention": []}
    for spec in specs:
        name, kind, axes = spec.get("name"), spec.get("kind"), tuple(spec.get("axes") or ())
        if not name:
            continue
        if layer is not None and layer_of(name) not in (layer, None):
            continue
        if kind in ("read_weights", "write_weights") and axes[-1:] == ("slot",) and len(axes) == 2:
            roles["read" if kind == "read_weights" else "write"].append(name)
        elif axes == ("slot",):
            roles["slots"].append(name)  # usage, allocation
        elif kind == "state" and axes in (("slot", "feature"), ("head", "key", "value")):
            roles["matrix"].append(name)  # the memory matrix, or a linear-memory layer's state per head
        elif kind == "attention" and len(axes) == 2 and axes[-1] == "key":
            roles["attention"].append(name)
    roles["matrix"] = roles["matrix"][:1]
    return roles


def sites_to_record(specs: Sequence[Mapping[str, Any]], layer: int | None = None) -> list[str]:
    """Sites for the first trace (the chosen layer's, in a stacked model); the memory
    matrix (the bulk of the data) is fetched by a second request once the heatmaps are drawn."""
    roles = site_roles(specs, layer)
    return [name for role, names in roles.items() if role != "matrix" for name in names]


# -- the time axis of a (reduced, windowed) trace --------------------------------------------

def time_edges(trace: Mapping[str, Any]) -> list[int]:
    """Edges of the trace's time bins in timesteps (bin i: steps edges[i]..edges[i+1]-1);
    one bin per step for an answer without `time`."""
    time = trace.get("time") or {}
    if time.get("edges"):
        return list(time["edges"])
    return list(range(len(first_row(trace.get("inputs")) or []) + 1))


def bin_centres(edges: Sequence[int]) -> list[float | int]:
    """Where each bin sits on a timestep axis (a step's own number when a bin is one step)."""
    return [a if b - a == 1 else (a + b - 1) / 2 for a, b in zip(edges[:-1], edges[1:])]


def matrix_points(step_values: int) -> int | None:
    """`max_points` for the memory matrix request: per-step values x bins within
    MAX_MATRIX_VALUES (None: every step fits at any length we trace)."""
    return max(16, MAX_MATRIX_VALUES // max(step_values, 1))


def zoom_window(relayout: Mapping[str, Any] | None, length: int, axis: str = "xaxis") -> tuple[int, int] | None | bool:
    """A Plotly relayout on a timestep axis as a window of steps [t0, t1): the range
    zoomed into; None to go back to the whole sequence (autorange: a double click); False
    when the relayout is not a zoom on that axis (a resize, a pan of another axis)."""
    if not relayout:
        return False
    if relayout.get(f"{axis}.autorange"):
        return None
    lo, hi = relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]")
    if lo is None and isinstance(relayout.get(f"{axis}.range"), list):
        lo, hi = relayout[f"{axis}.range"][:2]
    if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)):
        return False
    lo, hi = sorted((lo, hi))
    t0, t1 = max(0, math.floor(lo + 0.5)), min(length, math.ceil(hi + 0.5))
    if t1 - t0 < 2:
        return False
    return None if (t0, t1) == (0, length) else (t0, t1)


# -- the trace as per-step arrays ------------------------------------------------------------

def first_row(entry: Mapping[str, Any] | None) -> list | None:
    """Sample 0 of a labelled tensor `{"axes": ["batch", "time", ...], "data": ...}`."""
    if not entry or not entry.get("data"):
        return None
    axes = entry.get("axes") or []
    data = entry["data"]
    return data[0] if axes[:1] == ["batch"] else data


def split_heads(name: str, steps: list, axes: Sequence[str], average: Callable[[list], Any]) -> list[dict]:
    """Per-step values `[T][heads]...` -> one series per head: {"label", "site", "head",
    "values": [T]...}; an SSM's many channels become one series, `average` of a step's
    per-channel values (drawing 32 near-identical lines would hide the rest)."""
    if not steps:
        return []
    heads = len(steps[0])
    head_axis = axes[2] if len(axes) > 2 else "head"
    if head_axis == "channel" and heads > 1:
        return [{"label": f"{name} (mean of {heads} channels)", "site": name, "head": None,
                 "values": [average(step) for step in steps]}]
    return [{"label": name if heads == 1 else f"{name} head {h}", "site": name, "head": h,
             "values": [step[h] for step in steps]} for h in range(heads)]


def _mean_weights(rows: list[list]) -> list:
    """Channel-averaged weights for the heatmap (a display reduction, like a colour scale)."""
    return [sum(col) / len(rows) for col in zip(*[[v or 0.0 for v in row] for row in rows])]


def _mean_defined(values: list) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def head_series(name: str, steps: list, axes: Sequence[str]) -> list[dict]:
    """Per-step weights `[T][heads][n]` -> one series per head: {"label", "site", "head", "w": [T][n]}."""
    return [{**{k: v for k, v in s.items() if k != "values"}, "w": s["values"]}
            for s in split_heads(name, steps, axes, _mean_weights)]


def bundle_text(bundle: Mapping[str, Any] | None) -> str | None:
    """The bundle as the browser's store holds it: one compact JSON string (see
    assets/mnemoscope.js `parseBundle`)."""
    return None if bundle is None else json.dumps(bundle, separators=(",", ":"), allow_nan=False)


def rounded(value: Any, digits: int = 4) -> Any:
    """Nested lists of numbers with floats rounded: the browser gets a third of the JSON,
    and four decimals are more than a colour scale or a hover label shows. Missing
    values (None) stay None."""
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round(value, digits)
    try:
        arr = np.asarray(value, dtype=np.float64)  # None -> nan
    except (TypeError, ValueError):  # ragged
        return [rounded(v, digits) for v in value]
    arr = np.round(arr, digits)
    if np.isnan(arr).any():
        return np.where(np.isnan(arr), None, arr).tolist()
    return arr.tolist()


def keep_head(series: Mapping[str, Any], head: int | None) -> bool:
    """Every head when none is chosen; else the chosen one (series without heads stay)."""
    return head is None or series.get("head") is None or series.get("head") == head


def build_bundle(trace: Mapping[str, Any], specs: Sequence[Mapping[str, Any]], t: int | None = None,
                 layer: int | None = None, head: int | None = None) -> dict:
    """What the browser keeps for scrubbing: per-step arrays of sample 0 (rounded), of
    the chosen layer and head (all heads: None)."""
    roles = site_roles(specs, layer)
    sites = trace.get("sites") or {}
    edges = time_edges(trace)
    T = (trace.get("time") or {}).get("length", edges[-1])
    bundle: dict[str, Any] = {"T": T, "read": [], "write": [], "slots": [], "attention": [],
                              "matrix_site": (roles["matrix"] or [None])[0], "hidden_heads": 0,
                              "head": head if head is not None else 0}
    for role in ROLES_DRAWN:
        for name in roles[role]:
            entry = sites.get(name)
            steps = first_row(entry)
            if steps is None:
                continue
            bundle[role].extend(h for h in head_series(name, rounded(steps), entry.get("axes") or [])
                                if keep_head(h, head))
    for name in roles["slots"]:
        steps = first_row(sites.get(name))
        if steps is not None:
            bundle["slots"].append({"label": name, "site": name, "w": rounded(steps)})
    for role in ROLES_DRAWN:
        if len(bundle[role]) > MAX_PANELS:
            bundle["hidden_heads"] += len(bundle[role]) - MAX_PANELS
            bundle[role] = bundle[role][:MAX_PANELS]
    attention_size = sum(len(s["w"]) * len(s["w"][0] or []) for s in bundle["attention"] if s["w"])
    if attention_size > MAX_ATTENTION_VALUES:
        bundle["attention"] = bundle["attention"][:1]
    firsts = [s["w"][0] for role in ("read", "write", "slots") for s in bundle[role] if s["w"]]
    bundle["slotsN"] = max((len(w) for w in firsts), default=0)
    # the per-step weights plot keeps one y range while scrubbing
    bundle["wmax"] = max([v for role in ("read", "write", "slots") for s in bundle[role] for row in s["w"]
                          for v in row if v is not None] + [WEIGHT_FLOOR])
    # the steps drawn (a zoomed window, or all) and, for a reduced trace, the bins the
    # per-step arrays are of: the browser maps a timestep to its bin (assets/mnemoscope.js)
    t0, t1 = edges[0], edges[-1]
    bundle["window"] = [t0, t1]
    bundle["edges"] = edges if any(b - a > 1 for a, b in zip(edges[:-1], edges[1:])) else None
    key_bins = next(((s.get("bins") or {}).get("key") for s in sites.values() if (s.get("bins") or {}).get("key")), None)
    bundle["key_bin"] = key_bins[1] - key_bins[0] if key_bins else 1
    bundle["t"] = t0 if T == 0 else max(t0, min(t1 - 1, t if t is not None else t0))
    return bundle


def entropy_series(trace: Mapping[str, Any], specs: Sequence[Mapping[str, Any]], layer: int | None = None,
                   head: int | None = None) -> list[dict]:
    """The engine's normalised entropy per step of every distribution site the page draws
    (of the chosen layer and head), one series per head: {"label", "role", "h": [T]}
    (None where it is undefined)."""
    roles = site_roles(specs, layer)
    sites = trace.get("sites") or {}
    series: list[dict] = []
    for role in ("read", "write", "attention", "slots"):
        of_role: list[dict] = []
        for name in roles[role]:
            entropy = (sites.get(name) or {}).get("entropy")
            steps = first_row(entropy)
            if steps is None:
                continue
            if steps and not isinstance(steps[0], list):  # no head axis: one series
                of_role.append({"label": name, "role": role, "h": steps})
                continue
            for s in split_heads(name, steps, entropy.get("axes") or [], _mean_defined):
                if keep_head(s, head):
                    of_role.append({"label": s["label"], "role": role, "h": s["values"]})
        series.extend(of_role[:MAX_PANELS])
    return series


def matrix_steps(trace: Mapping[str, Any], site: str, head: int = 0) -> dict | None:
    """The memory matrix per step of sample 0 (a linear-memory state: that of `head`),
    rounded, with its largest magnitude (the colour scale is fixed over the sequence) and,
    for a reduced trace, its time bins' edges; None when missing or too large."""
    entry = (trace.get("sites") or {}).get(site) or {}
    steps = first_row(entry)
    if not steps or not steps[0]:
        return None
    label = site
    if (entry.get("axes") or [])[2:3] == ["head"]:
        head = max(0, min(len(steps[0]) - 1, head))
        steps, label = [step[head] for step in steps], f"{site} head {head}"
    if len(steps) * len(steps[0]) * len(steps[0][0] or []) > MAX_MATRIX_VALUES:
        return None
    m = rounded(steps, 3)
    absmax = max((abs(v) for step in m for row in step for v in row if v is not None), default=1.0)
    edges = time_edges(trace) if trace.get("time") else None
    reduced = edges is not None and len(edges) - 1 < edges[-1] - edges[0]
    return {"label": label, "m": m, "absmax": absmax or 1.0, **({"edges": edges} if reduced else {})}


# -- text and export --------------------------------------------------------------------------

def summary_line(trace: Mapping[str, Any], T: int) -> str:
    summ = trace.get("summary") or {}
    per_seq = summ.get("metric_per_sequence") or []
    name = trace.get("metric_name") or "metric"
    parts = [f"{T} timesteps", f"loss {fmt(summ.get('loss'))}"]
    if per_seq:
        parts.append(f"{name} {fmt(per_seq[0])}")
    if summ.get("chance") is not None:
        parts.append(f"chance {fmt(summ.get('chance'))}")
    task = trace.get("task") or {}
    if task.get("name"):
        parts.append(f"task {task['name']}")
    return " · ".join(parts)


def trace_json(trace: Mapping[str, Any], bundle: Mapping[str, Any], entropy: Sequence[Mapping]) -> dict:
    """The exported trace: what the page draws (sample 0), without the memory matrix."""
    return {
        "checkpoint_id": trace.get("checkpoint_id"), "task": trace.get("task"), "seed": trace.get("seed"),
        "metric_name": trace.get("metric_name"), "summary": trace.get("summary"),
        "inputs": first_row(trace.get("inputs")), "targets": first_row(trace.get("targets")),
        "outputs": rounded(first_row(trace.get("outputs"))), "loss": rounded(first_row(trace.get("loss"))),
        "metric": first_row(trace.get("metric")),
        "weights": {role: [{"label": s["label"], "values": s["w"]} for s in bundle.get(role, [])]
                    for role in ("read", "write", "slots", "attention")},
        "entropy": [{"label": s["label"], "values": rounded(s["h"])} for s in entropy],
    }


def trace_rows(trace: Mapping[str, Any], entropy: Sequence[Mapping[str, Any]],
               bundle: Mapping[str, Any] | None = None) -> list[dict]:
    """CSV: one row per timestep with loss, the metric (each scored position's own score;
    empty where nothing is scored), each entropy series and the heatmaps' values (a
    column per slot, or per key, of every head drawn)."""
    loss = first_row(trace.get("loss")) or []
    metric = first_row(trace.get("metric_scored")) or first_row(trace.get("metric")) or []
    mask = first_row(trace.get("mask")) or []
    starts = time_edges(trace)  # a reduced trace: one row per bin, at its first step
    rows = []
    for t in range(len(loss)):
        row = {"t": starts[t] if t < len(starts) else t, "scored": bool(mask[t]) if t < len(mask) else None, "loss": loss[t],
               trace.get("metric_name") or "metric": metric[t] if t < len(metric) else None}
        for s in entropy:
            row[f"entropy {s['label']}"] = s["h"][t] if t < len(s["h"]) else None
        for role, index in (("read", "slot"), ("write", "slot"), ("slots", "slot"), ("attention", "key")):
            if role == "attention" and (bundle or {}).get("edges"):
                continue  # a reduced trace's query x key bins: in the JSON export, not a CSV of 65k cells
            for s in (bundle or {}).get(role) or []:
                values = s["w"][t] if t < len(s["w"]) else []
                for i, v in enumerate(values or []):
                    row[f"{s['label']} {index} {i}"] = v
        rows.append(row)
    return rows
