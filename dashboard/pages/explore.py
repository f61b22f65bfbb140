"""Explore: where the network reads and writes, step by step.

One trace request fills a `dcc.Store` (the "bundle": per-step weights, the memory
matrix, attention rows) and draws the whole-sequence figures; the timestep slider, the
play button and clicks on heatmap columns then redraw the selected-timestep panels in
the browser (assets/mnemoscope.js `scrub`), with no server round trip.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html

from ..api import ApiClient, ApiError
from ..components import (
    DIFFUSE_ABOVE,
    DIVERGING,
    SHARP_BELOW,
    WEIGHT_FLOOR,
    WEIGHT_SCALE,
    axis,
    axis_key,
    axis_ref,
    base_layout,
    empty_figure,
    figure,
    stack_domains,
    subplot_title,
    error_box,
    export_buttons,
    export_payload,
    fmt,
    graph_card,
    normalised_entropy,
)
from .common import checkpoint_boot, checkpoint_dropdown, field, length_params, to_int

PATH = "explore"
TITLE = "Explore"
URL_KEYS = ["checkpoint", "length", "seed", "t"]

MAX_PANELS = 8  # heatmap subplots per figure; more heads are summarised in a note
MAX_MATRIX_VALUES = 400_000  # T x slots x width sent to the browser for the per-step matrix
MAX_ATTENTION_VALUES = 600_000

# graphs whose x axis is time get the selected-timestep cursor (assets/mnemoscope.js
# draws it over them); the step graphs are redrawn in the browser for each timestep
TIME_GRAPHS = ["explore-strips", "explore-read", "explore-write", "explore-slots", "explore-entropy"]
STEP_GRAPHS = ["explore-weights-t", "explore-matrix-t", "explore-attention-t"]


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


def _head_series(name: str, steps: list, axes: Sequence[str]) -> list[dict]:
    """Per-step `[T][heads][n]` -> one series per head: {"label", "w": [T][n]}; an SSM's
    many channels are averaged into one."""
    if not steps:
        return []
    heads = len(steps[0])
    head_axis = axes[2] if len(axes) > 2 else "head"
    if head_axis == "channel" and heads > 1:
        avg = [[sum(col) / heads for col in zip(*[[v or 0.0 for v in row] for row in step])] for step in steps]
        return [{"label": f"{name} (mean of {heads} channels)", "site": name, "head": None, "w": avg}]
    series = []
    for h in range(heads):
        label = name if heads == 1 else f"{name} head {h}"
        series.append({"label": label, "site": name, "head": h, "w": [step[h] for step in steps]})
    return series


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
    for role in ("read", "write", "attention"):
        for name in roles[role]:
            entry = sites.get(name)
            steps = first_row(entry)
            if steps is None:
                continue
            bundle[role].extend(_head_series(name, rounded(steps), entry.get("axes") or []))
    for name in roles["slots"]:
        steps = first_row(sites.get(name))
        if steps is not None:
            bundle["slots"].append({"label": name, "site": name, "w": rounded(steps)})
    for role in ("read", "write", "attention"):
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


# -- whole-sequence figures ------------------------------------------------------------------
# Figures whose x axis is time share one x axis ("x") across stacked y axes, so the
# browser's cursor is one line per y axis at x = t.

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


def load_matrix(api: ApiClient, bundle: Mapping[str, Any] | None) -> dict | None:
    """Second request of a trace: the same sample again, recording only the matrix."""
    if not bundle or not bundle.get("matrix_site") or not bundle.get("request"):
        return None
    req = bundle["request"]
    try:
        trace = api.trace(req["checkpoint"], params=req.get("params") or None, seed=req.get("seed", 0), samples=1,
                          sites=[bundle["matrix_site"]])
    except ApiError as exc:
        return {"error": str(exc)}
    return matrix_steps(trace, bundle["matrix_site"])


def _transpose(rows: list[list]) -> list[list]:
    return [list(col) for col in zip(*rows)] if rows else []


def _stacked(n: int, titles: Sequence[str], *, height: int, weights: Sequence[float] | None = None,
             gap: float | None = None, x_title: str = "timestep", T: int | None = None) -> dict:
    """Layout with n y axes stacked on one shared x axis (anchored to the bottom one)."""
    gap = gap if gap is not None else min(0.08, 0.3 / max(n, 1))
    domains = stack_domains(n, gap=gap, weights=weights)
    layout = base_layout(height=height, margin={"t": 24, "b": 40, "l": 56, "r": 16})
    layout["xaxis"] = axis(anchor=axis_ref("y", n - 1), title={"text": x_title}, showgrid=False,
                           **({"range": [-0.5, T - 0.5]} if T else {}))
    layout["annotations"] = []
    for i, (lo, hi) in enumerate(domains):
        layout[axis_key("y", i)] = axis(domain=[lo, hi], anchor="x", showgrid=False)
        if titles[i]:
            layout["annotations"].append(subplot_title(titles[i], 0.5, hi))
    return layout


def strips_figure(trace: Mapping[str, Any]) -> dict:
    """Input, target and output (probabilities) over time, and the metric per step."""
    inputs = first_row(trace.get("inputs")) or []
    targets = first_row(trace.get("targets")) or []
    outputs = first_row(trace.get("outputs")) or []
    metric = first_row(trace.get("metric")) or []
    mask = first_row(trace.get("mask")) or []
    T = len(inputs)
    steps = list(range(T))
    metric_name = trace.get("metric_name") or "metric"
    bits = trace.get("output_kind", "bits") == "bits"
    token_inputs = bool(inputs) and not isinstance(inputs[0], list)
    grey = {"colorscale": "Greys", "showscale": False, "zmin": 0, "zmax": 1}
    data: list[dict] = []
    if token_inputs:
        # token ids are names, not amounts: plain cells with the id written in
        data.append({"type": "heatmap", "z": [[0] * T], "x": steps, "y": ["token"], "text": [[str(v) for v in inputs]],
                     "texttemplate": "%{text}", "colorscale": [[0, "#eef1f5"], [1, "#eef1f5"]], "showscale": False,
                     "yaxis": "y", "xgap": 1, "hovertemplate": "t=%{x}<br>token %{text}<extra>input</extra>"})
    else:
        data.append({"type": "heatmap", "z": _transpose(inputs), "x": steps, **grey, "yaxis": "y",
                     "hovertemplate": "t=%{x} channel %{y}<br>%{z}<extra>input</extra>"})
    if bits:
        data.append({"type": "heatmap", "z": _transpose(targets), "x": steps, **grey, "yaxis": "y2",
                     "hovertemplate": "t=%{x} bit %{y}<br>%{z}<extra>target</extra>"})
        data.append({"type": "heatmap", "z": _transpose(outputs), "x": steps, **grey, "yaxis": "y3",
                     "hovertemplate": "t=%{x} bit %{y}<br>p=%{z:.3f}<extra>output</extra>"})
    else:
        shown = [t if m else None for t, m in zip(targets, mask or [True] * T)]
        data.append({"type": "heatmap", "z": [[0 if v is None else 1 for v in shown]], "x": steps, "y": ["target"],
                     "text": [["" if v is None else str(v) for v in shown]], "texttemplate": "%{text}",
                     "colorscale": [[0, "#ffffff"], [1, "#dde6f3"]], "showscale": False, "zmin": 0, "zmax": 1,
                     "yaxis": "y2", "hovertemplate": "t=%{x}<br>target %{text}<extra></extra>"})
        pred = [max(range(len(p)), key=lambda i: p[i] or 0.0) if p else None for p in outputs]
        conf = [p[k] if p and k is not None else None for p, k in zip(outputs, pred)]
        data.append({"type": "heatmap", "z": [conf], "x": steps, "y": ["predicted"], "text": [[str(k) for k in pred]],
                     "texttemplate": "%{text}", "colorscale": [[0, "#ffffff"], [1, "#9ecae1"]], "showscale": False,
                     "zmin": 0, "zmax": 1, "xgap": 1, "yaxis": "y3",
                     "hovertemplate": "t=%{x}<br>predicted %{text} (p=%{z:.3f})<extra></extra>"})
    data.append({"type": "bar", "x": steps, "y": [m if m is not None else 0 for m in metric], "yaxis": "y4",
                 "marker": {"color": "#c0392b"}, "hovertemplate": "t=%{x}<br>%{y:.3f}<extra>" + metric_name + "</extra>"})
    layout = _stacked(4, ["input", "target", "output", f"{metric_name} per step"], height=330,
                      weights=[0.3, 0.3, 0.3, 0.12], gap=0.07, T=T)
    layout["showlegend"] = False
    for i in range(3):
        layout[axis_key("y", i)].update(tickfont={"size": 9}, showticklabels=not token_inputs)
    layout["yaxis4"].update(tickfont={"size": 9}, nticks=3, rangemode="tozero")
    return figure(data, layout)


def heads_figure(series: Sequence[Mapping[str, Any]], *, y_title: str, empty: str) -> dict:
    """One slot x timestep heatmap per head (y = slot, x = timestep), on one colour scale
    from 0 to the largest weight: weights spread thinly (a DNC's sum to at most 1) stay
    visible, and heads remain comparable."""
    if not series:
        return empty_figure(empty)
    zmax = max([v for s in series for row in s["w"] for v in row if v is not None] + [WEIGHT_FLOOR])
    n = len(series)
    T = len(series[0]["w"])
    n_slots = len(series[0]["w"][0]) if series[0]["w"] else 0
    per = 150 if n_slots <= 32 else 220
    layout = _stacked(n, [s["label"] for s in series], height=min(1300, 70 + per * n), T=T)
    layout["coloraxis"] = {"colorscale": WEIGHT_SCALE, "cmin": 0, "cmax": zmax,
                           "colorbar": {"len": 0.6, "thickness": 10}}
    data = []
    for i, s in enumerate(series):
        layout[axis_key("y", i)].update(title={"text": y_title}, autorange="reversed")
        data.append({"type": "heatmap", "z": _transpose(s["w"]), "coloraxis": "coloraxis", "yaxis": axis_ref("y", i),
                     "hovertemplate": "t=%{x} " + y_title + " %{y}<br>w=%{z:.4f}<extra>" + s["label"] + "</extra>"})
    return figure(data, layout)


def shared_colour_axis(series: Sequence[Mapping[str, Any]]) -> dict:
    """One colour scale for a figure's heatmaps: weights from 0 (Viridis), or, where some
    are negative (the implicit attention of linear memory and SSMs is signed), a
    diverging scale centred on 0."""
    values = [v for s in series for row in s["w"] for v in (row or []) if v is not None]
    low, high = min(values, default=0.0), max(values, default=0.0)
    bar = {"len": 0.6, "thickness": 10}
    if low < 0:
        lim = max(abs(low), abs(high)) or 1.0
        return {"colorscale": DIVERGING, "cmin": -lim, "cmax": lim, "colorbar": bar}
    return {"colorscale": WEIGHT_SCALE, "cmin": 0, "cmax": max(high, WEIGHT_FLOOR), "colorbar": bar}


def attention_figure(series: Sequence[Mapping[str, Any]]) -> dict:
    """Query x key heatmap per head, in a grid of two columns; the heads of one site share
    a colour scale (explicit attention and signed implicit attention differ in range)."""
    if not series:
        return empty_figure("no attention sites")
    cols = min(2, len(series))
    rows = (len(series) + cols - 1) // cols
    gap_x = 0.12
    width = (1.0 - gap_x * (cols - 1)) / cols - (0.04 if cols == 1 else 0.0)
    ydoms = stack_domains(rows, gap=0.12 if rows > 1 else 0.0)
    layout = base_layout(height=min(1300, 90 + 300 * rows), margin={"t": 28, "r": 40})
    layout["annotations"] = []
    sites = list(dict.fromkeys(s.get("site") or s["label"] for s in series))
    data = []
    for i, s in enumerate(series):
        r, c = divmod(i, cols)
        x0 = c * (width + gap_x)
        site = s.get("site") or s["label"]
        k = sites.index(site)
        ca = "coloraxis" if k == 0 else f"coloraxis{k + 1}"
        if ca not in layout:  # the site's first head: its scale, with a colour bar beside it
            scale = shared_colour_axis([t for t in series if (t.get("site") or t["label"]) == site])
            scale["colorbar"] = {"thickness": 8, "len": (ydoms[r][1] - ydoms[r][0]) * 0.9, "x": x0 + width + 0.005,
                                 "xanchor": "left", "y": (ydoms[r][0] + ydoms[r][1]) / 2, "yanchor": "middle",
                                 "tickfont": {"size": 9}}
            layout[ca] = scale
        xk, yk = axis_key("x", i), axis_key("y", i)
        layout[xk] = axis(domain=[x0, x0 + width], anchor=axis_ref("y", i), title={"text": "key"}, showgrid=False)
        layout[yk] = axis(domain=list(ydoms[r]), anchor=axis_ref("x", i), title={"text": "query t"},
                          autorange="reversed", showgrid=False)
        layout["annotations"].append(subplot_title(s["label"], x0 + width / 2, ydoms[r][1]))
        data.append({"type": "heatmap", "z": s["w"], "coloraxis": ca, "xaxis": axis_ref("x", i),
                     "yaxis": axis_ref("y", i),
                     "hovertemplate": "query t=%{y}, key %{x}<br>%{z:.4f}<extra>" + s["label"] + "</extra>"})
    return figure(data, layout)


def entropy_series(bundle: Mapping[str, Any], distribution_sites: set[str]) -> list[dict]:
    """Normalised entropy per step of every distribution over slots or keys.

    Computed here from the weights the trace returned (a display transform, like a
    colour scale; the analysis engine's report has the same numbers over many
    sequences). Weights are renormalised first: a DNC's weightings sum to at most 1."""
    series = []
    for role in ("read", "write", "attention"):
        for s in bundle.get(role, []):
            if s.get("site") not in distribution_sites:
                continue
            causal = role == "attention"
            ys = [normalised_entropy(w, n=(t + 1) if causal else None) for t, w in enumerate(s["w"])]
            series.append({"label": s["label"], "role": role, "h": ys})
    for s in bundle.get("slots", []):
        if s.get("site") in distribution_sites:
            series.append({"label": s["label"], "role": "slots", "h": [normalised_entropy(w) for w in s["w"]]})
    return series


def entropy_figure(series: Sequence[Mapping[str, Any]], T: int) -> dict:
    if not series:
        return empty_figure("no distribution sites to take the entropy of")
    band = {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "line": {"width": 0}, "layer": "below"}
    shapes = [{**band, "y0": DIFFUSE_ABOVE, "y1": 1.0, "fillcolor": "rgba(245,176,65,0.2)", "name": "diffuse"},
              {**band, "y0": 0.0, "y1": SHARP_BELOW, "fillcolor": "rgba(93,173,226,0.2)", "name": "sharp"}]
    labels = [{"text": "diffuse", "xref": "paper", "x": 0.005, "y": 0.995, "yref": "y", "xanchor": "left",
               "yanchor": "top", "showarrow": False, "font": {"size": 10, "color": "#9a6b14"}},
              {"text": "sharp", "xref": "paper", "x": 0.005, "y": 0.005, "yref": "y", "xanchor": "left",
               "yanchor": "bottom", "showarrow": False, "font": {"size": 10, "color": "#2471a3"}}]
    dashes = {"read": "solid", "write": "dash", "attention": "dot", "slots": "dashdot"}
    data = [{"type": "scatter", "x": list(range(len(s["h"]))), "y": s["h"], "mode": "lines+markers", "name": s["label"],
             "line": {"dash": dashes.get(s["role"], "solid"), "width": 1.6}, "marker": {"size": 4},
             "hovertemplate": "t=%{x}<br>H/log n = %{y:.3f}<extra>" + s["label"] + "</extra>"} for s in series]
    layout = base_layout(height=270, shapes=shapes, annotations=labels,
                         yaxis={"range": [-0.02, 1.02], "title": {"text": "entropy / log n"}},
                         xaxis={"title": {"text": "timestep"}, "range": [-0.5, max(T, 1) - 0.5]},
                         legend={"orientation": "h", "y": -0.3, "font": {"size": 10}})
    return figure(data, layout)


def summary_line(trace: Mapping[str, Any], checkpoint: Mapping[str, Any] | None, T: int) -> str:
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


# -- the callback's work --------------------------------------------------------------------

def load_view(api: ApiClient, checkpoint_id: str | None, length: Any, seed: Any, t: Any = None) -> dict:
    """Everything the page shows for one (checkpoint, length, seed): figures, the bundle
    for scrubbing, slider settings, which optional cards to show, and any error."""
    view = _blank_view()
    if not checkpoint_id:
        view["status"] = "Choose a checkpoint to trace."
        return view
    try:
        length_v = to_int(length, minimum=1, name="length")
        seed_v = to_int(seed, default=0, minimum=0, name="seed")
        t_v = to_int(t, minimum=0, name="t")
    except ValueError as exc:
        view["error"] = str(exc)
        return view
    try:
        ckpt = api.checkpoint(checkpoint_id)
        specs = api.sites(checkpoint_id)
        params = length_params(ckpt.get("task"), length_v)
        trace = api.trace(checkpoint_id, params=params, seed=seed_v, samples=1, sites=sites_to_record(specs))
    except ApiError as exc:
        view["error"] = str(exc)
        return view
    bundle = build_bundle(trace, specs, t_v)
    bundle["request"] = {"checkpoint": checkpoint_id, "params": params, "seed": seed_v}
    T = bundle["T"]
    distribution = {s["name"] for s in specs if s.get("distribution")}
    ent = entropy_series(bundle, distribution)
    view.update(
        bundle=bundle,
        strips=strips_figure(trace),
        read=heads_figure(bundle["read"], y_title="slot", empty="this model has no read weightings over slots"),
        write=heads_figure(bundle["write"], y_title="slot", empty="this model has no write weightings over slots"),
        slots=heads_figure(bundle["slots"], y_title="slot", empty=""),
        attention=attention_figure(bundle["attention"]),
        entropy=entropy_figure(ent, T),
        slider_max=max(T - 1, 0),
        marks=_marks(T),
        t=bundle["t"],
        show_slots=bool(bundle["slots"]),
        show_attention=bool(bundle["attention"]),
        show_matrix=bundle["matrix_site"] is not None,
        show_rw=bool(bundle["read"] or bundle["write"]),
        show_weights=bool(bundle["read"] or bundle["write"] or bundle["slots"]),
        status=f"{ckpt.get('name') or checkpoint_id}: " + summary_line(trace, ckpt, T),
        export=export_payload(f"trace-{checkpoint_id}-seed{seed_v}", _trace_json(trace, bundle, ent),
                              _trace_rows(trace, ent)),
    )
    if bundle["hidden_heads"]:
        view["status"] += f" · {bundle['hidden_heads']} more heads not drawn"
    return view


def _blank_view() -> dict:
    blank = empty_figure()
    return {"bundle": None, "strips": blank, "read": blank, "write": blank, "slots": blank, "attention": blank,
            "entropy": blank, "slider_max": 0, "marks": {}, "t": 0, "show_slots": False, "show_attention": False,
            "show_matrix": False, "show_weights": False, "show_rw": False, "status": "", "error": None, "export": None}


def _marks(T: int) -> dict:
    if T <= 1:
        return {0: "0"}
    step = max(1, round(T / 10))
    return {i: str(i) for i in range(0, T, step)}


def _trace_json(trace: Mapping[str, Any], bundle: Mapping[str, Any], entropy: Sequence[Mapping]) -> dict:
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


def _trace_rows(trace: Mapping[str, Any], entropy: Sequence[Mapping[str, Any]]) -> list[dict]:
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


# -- layout ---------------------------------------------------------------------------------

def layout(params: Mapping[str, str], context=None) -> html.Div:
    ckpt = params.get("checkpoint")
    return html.Div(
        [
            dcc.Store(id="explore-boot", data=dict(params)),
            dcc.Store(id="explore-bundle"),
            dcc.Store(id="explore-deferred"),
            dcc.Store(id="explore-matrix"),
            dcc.Store(id="explore-url-keys", data=URL_KEYS),
            html.Span(id="explore-url-sink", hidden=True),
            html.Div(
                [
                    field("Checkpoint", checkpoint_dropdown("explore-checkpoint", ckpt), grow=True),
                    field("Length", dcc.Input(id="explore-length", type="number", min=1, step=1,
                                              value=params.get("length") or None, placeholder="task's own",
                                              debounce=True, className="ms-input ms-input-num")),
                    field("Seed", dcc.Input(id="explore-seed", type="number", min=0, step=1,
                                            value=params.get("seed") or 0, debounce=True,
                                            className="ms-input ms-input-num")),
                    html.Button("Trace", id="explore-run", className="ms-btn ms-btn-primary"),
                    export_buttons("explore"),
                ],
                className="ms-controls",
            ),
            html.Div(id="explore-boot-error"),
            html.Div(id="explore-error"),
            dcc.Loading(html.Div(id="explore-status", className="ms-status"), type="dot", delay_show=300),
            graph_card("explore-strips", "Input, target and output", filename="explore-strips",
                       note="Rows are channels (bits); the bottom bar is the task metric at each step."),
            html.Div(
                [
                    graph_card("explore-read", "Read weights (slot x timestep)", filename="read-weights",
                               note="Click a column to select that timestep."),
                    graph_card("explore-write", "Write weights (slot x timestep)", filename="write-weights",
                               note="Click a column to select that timestep."),
                ],
                className="ms-grid-2",
                id="explore-rw",
            ),
            html.Div(
                [
                    html.Button("Play", id="explore-play", className="ms-btn", n_clicks=0,
                                title="play the sequence step by step"),
                    dcc.Interval(id="explore-interval", interval=350, disabled=True),
                    html.Div(dcc.Slider(id="explore-t", min=0, max=0, step=1, value=0, marks={0: "0"},
                                        updatemode="drag"), className="ms-slider"),
                    html.Span("t = 0", id="explore-t-label", className="ms-t-label"),
                ],
                className="ms-scrubber",
            ),
            html.Div(
                [
                    graph_card("explore-weights-t", "Weights at t", filename="weights-at-t"),
                    graph_card("explore-matrix-t", "Memory matrix at t", filename="memory-at-t",
                               note="After this step's write."),
                    graph_card("explore-attention-t", "Attention at t", filename="attention-at-t"),
                ],
                className="ms-grid-3",
            ),
            graph_card("explore-slots", "Usage and allocation (slot x timestep)", filename="usage-allocation",
                       hidden=True, note="DNC: how used each slot is, and where the allocation gate points."),
            graph_card("explore-attention", "Attention patterns", filename="attention", hidden=True,
                       note="Explicit attention, or the implicit attention of linear-memory and SSM layers "
                            "(the weight each earlier input has on the output at t)."),
            graph_card("explore-entropy", "Normalised entropy per timestep", filename="entropy",
                       note=f"Entropy / log n of each weighting: above {DIFFUSE_ABOVE} the weight is spread "
                            f"everywhere (diffuse), below {SHARP_BELOW} it sits on a few places (sharp)."),
        ],
        className="ms-page",
    )


# -- callbacks ----------------------------------------------------------------------------

def register(app, context) -> None:
    @app.callback(
        Output("explore-checkpoint", "options"),
        Output("explore-boot-error", "children"),
        Input("explore-boot", "data"),
        State("token-input", "value"),
    )
    def _boot(boot, token):
        with context.client(token) as api:
            return checkpoint_boot(api, boot)

    @app.callback(
        Output("explore-bundle", "data"),
        Output("explore-read", "figure"),
        Output("explore-write", "figure"),
        Output("explore-deferred", "data"),
        Output("explore-t", "max"),
        Output("explore-t", "marks"),
        Output("explore-t", "value"),
        Output("explore-slots-card", "hidden"),
        Output("explore-attention-card", "hidden"),
        Output("explore-attention-t-card", "hidden"),
        Output("explore-matrix-t-card", "hidden"),
        Output("explore-weights-t-card", "hidden"),
        Output("explore-rw", "hidden"),
        Output("explore-status", "children"),
        Output("explore-error", "children"),
        Output({"type": "result", "name": "explore"}, "data"),
        Input("explore-checkpoint", "value"),
        Input("explore-length", "value"),
        Input("explore-seed", "value"),
        Input("explore-run", "n_clicks"),
        State("explore-boot", "data"),
        State("token-input", "value"),
    )
    def _trace(checkpoint_id, length, seed, _clicks, boot, token):
        t = None
        # the first trace of a page load keeps the URL's timestep
        if boot and boot.get("t") and ctx.triggered_id in (None, "explore-checkpoint") and checkpoint_id == boot.get("checkpoint"):
            t = boot.get("t")
        with context.client(token) as api:
            v = load_view(api, checkpoint_id, length, seed, t)
        deferred = {"figures": [v["strips"], v["slots"], v["attention"], v["entropy"]]}
        return (bundle_text(v["bundle"]), v["read"], v["write"], deferred,
                v["slider_max"], v["marks"], v["t"], not v["show_slots"], not v["show_attention"],
                not v["show_attention"], not v["show_matrix"], not v["show_weights"], not v["show_rw"], v["status"],
                error_box(v["error"]), v["export"])

    # the read/write heatmaps are drawn first; the other whole-sequence figures a frame
    # later, so the heatmaps appear without waiting for them
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "deferred"),
        Output("explore-strips", "figure"),
        Output("explore-slots", "figure"),
        Output("explore-attention", "figure"),
        Output("explore-entropy", "figure"),
        Input("explore-deferred", "data"),
        prevent_initial_call=True,
    )

    # selected timestep: everything below runs in the browser
    @app.callback(
        Output("explore-matrix", "data"),
        Input("explore-bundle", "data"),
        State("token-input", "value"),
        prevent_initial_call=True,
    )
    def _matrix(text, token):
        bundle = json.loads(text) if text else None
        if not bundle or not bundle.get("matrix_site"):
            return None
        with context.client(token) as api:
            return bundle_text(load_matrix(api, bundle))

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "scrub"),
        *[Output(g, "figure") for g in STEP_GRAPHS],
        Output("explore-t-label", "children"),
        Input("explore-t", "value"),
        Input("explore-bundle", "data"),
        Input("explore-matrix", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "stepTo"),
        Output("explore-t", "value", allow_duplicate=True),
        Input("explore-interval", "n_intervals"),
        *[Input(g, "clickData") for g in TIME_GRAPHS],
        State("explore-t", "value"),
        State("explore-bundle", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "togglePlay"),
        Output("explore-interval", "disabled"),
        Output("explore-play", "children"),
        Input("explore-play", "n_clicks"),
        State("explore-interval", "disabled"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "syncUrl"),
        Output("explore-url-sink", "children"),
        Input("explore-checkpoint", "value"),
        Input("explore-length", "value"),
        Input("explore-seed", "value"),
        Input("explore-t", "value"),
        State("explore-url-keys", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "rememberCheckpoint"),
        Output("current-checkpoint", "data", allow_duplicate=True),
        Input("explore-checkpoint", "value"),
        prevent_initial_call="initial_duplicate",
    )
