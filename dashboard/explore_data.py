"""Explore's data shaping: which sites to trace, and a trace answer turned into what the
page keeps (the per-step "bundle" the browser scrubs, the memory matrix, the entropy
series, the export).

Only reshaping, rounding and selection happen here: every number is the API's, the
normalised entropy included (the trace carries the engine's value for each
distribution site, `sites[name]["entropy"]`).
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .components import WEIGHT_FLOOR, fmt

MAX_PANELS = 8  # heatmap subplots per figure (and entropy lines per role); more heads are summarised in a note
MAX_MATRIX_VALUES = 400_000  # T x slots x width sent to the browser for the per-step matrix
MAX_ATTENTION_VALUES = 600_000
ROLES_DRAWN = ("read", "write", "attention")  # roles with one heatmap per head


# -- which sites to ask for ---------------------------------------------------------------

def site_roles(specs: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Group the model's sites by the panel that draws them, by kind and axes only."""
    roles: dict[str, list[str]] = {"read": [], "write": [], "slots": [], "matrix": [], "attention": []}
    for spec in specs:
        name, kind, axes = spec.get("name"), spec.get("kind"), tuple(spec.get("axes") or ())
        if not name:
            continue
        if kind in ("read_weights", "write_weights") and axes[-1:] == ("slot",) and len(axes) == 2:
            roles["read" if kind == "read_weights" else "write"].append(name)
        elif axes == ("slot",):
            roles["slots"].append(name)  # usage, allocation
        elif kind == "state" and axes == ("slot", "feature"):
            roles["matrix"].append(name)
        elif kind == "attention" and len(axes) == 2 and axes[-1] == "key":
            roles["attention"].append(name)
    roles["matrix"] = roles["matrix"][:1]
    return roles


def sites_to_record(specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sites for the first trace; the memory matrix (the bulk of the data) is fetched by a
    second request once the heatmaps are drawn."""
    roles = site_roles(specs)
    return [name for role, names in roles.items() if role != "matrix" for name in names]


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


def build_bundle(trace: Mapping[str, Any], specs: Sequence[Mapping[str, Any]], t: int | None = None) -> dict:
    """What the browser keeps for scrubbing: per-step arrays of sample 0 (rounded)."""
    roles = site_roles(specs)
    sites = trace.get("sites") or {}
    inputs = first_row(trace.get("inputs")) or []
    T = len(inputs)
    bundle: dict[str, Any] = {"T": T, "read": [], "write": [], "slots": [], "attention": [],
                              "matrix_site": (roles["matrix"] or [None])[0], "hidden_heads": 0}
    for role in ROLES_DRAWN:
        for name in roles[role]:
            entry = sites.get(name)
            steps = first_row(entry)
            if steps is None:
                continue
            bundle[role].extend(head_series(name, rounded(steps), entry.get("axes") or []))
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
    bundle["t"] = 0 if T == 0 else max(0, min(T - 1, t if t is not None else 0))
    return bundle


def entropy_series(trace: Mapping[str, Any], specs: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The engine's normalised entropy per step of every distribution site the page draws,
    one series per head: {"label", "role", "h": [T]} (None where it is undefined)."""
    roles = site_roles(specs)
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
                of_role.append({"label": s["label"], "role": role, "h": s["values"]})
        series.extend(of_role[:MAX_PANELS])
    return series


def matrix_steps(trace: Mapping[str, Any], site: str) -> dict | None:
    """The memory matrix per step of sample 0, rounded, with its largest magnitude (the
    colour scale is fixed over the sequence); None when missing or too large."""
    steps = first_row((trace.get("sites") or {}).get(site))
    if not steps or not steps[0]:
        return None
    if len(steps) * len(steps[0]) * len(steps[0][0] or []) > MAX_MATRIX_VALUES:
        return None
    m = rounded(steps, 3)
    absmax = max((abs(v) for step in m for row in step for v in row if v is not None), default=1.0)
    return {"label": site, "m": m, "absmax": absmax or 1.0}


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


def trace_rows(trace: Mapping[str, Any], entropy: Sequence[Mapping[str, Any]]) -> list[dict]:
    """CSV: one row per timestep with loss, metric and each entropy series."""
    loss = first_row(trace.get("loss")) or []
    metric = first_row(trace.get("metric")) or []
    rows = []
    for t in range(len(loss)):
        row = {"t": t, "loss": loss[t], trace.get("metric_name") or "metric": metric[t] if t < len(metric) else None}
        for s in entropy:
            row[f"entropy {s['label']}"] = s["h"][t] if t < len(s["h"]) else None
        rows.append(row)
    return rows
