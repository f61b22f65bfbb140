"""Explore's figures, built from the bundle and the trace answer (plain Plotly dicts).

Figures whose x axis is time share one x axis ("x") across stacked y axes, so the
browser's cursor (assets/mnemoscope.js) is one line per y axis at x = t.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .components import (
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
    step_runs,
    subplot_title,
)
from .explore_data import bin_centres, first_row, time_edges

TEXT_CELLS = 128  # token and class strips write each cell's id up to this many steps (beyond: unreadable, slow)


def _transpose(rows: list[list]) -> list[list]:
    return [list(col) for col in zip(*rows)] if rows else []


def _stacked(n: int, titles: Sequence[str], *, height: int, weights: Sequence[float] | None = None,
             gap: float | None = None, x_title: str = "timestep", span: Sequence[int] | None = None) -> dict:
    """Layout with n y axes stacked on one shared x axis (anchored to the bottom one),
    showing steps span = (t0, t1) (all of them: the x axis is in timesteps, reduced or not)."""
    gap = gap if gap is not None else min(0.08, 0.3 / max(n, 1))
    domains = stack_domains(n, gap=gap, weights=weights)
    layout = base_layout(height=height, margin={"t": 24, "b": 40, "l": 56, "r": 16})
    layout["xaxis"] = axis(anchor=axis_ref("y", n - 1), title={"text": x_title}, showgrid=False,
                           **({"range": [span[0] - 0.5, span[-1] - 0.5]} if span and span[-1] > span[0] else {}))
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
    scored_metric = first_row(trace.get("metric_scored"))
    metric = scored_metric or first_row(trace.get("metric")) or []
    mask = first_row(trace.get("mask")) or []
    T = len(inputs)
    edges = time_edges(trace)
    steps = bin_centres(edges)
    written = T <= TEXT_CELLS
    metric_name = trace.get("metric_name") or "metric"
    bits = trace.get("output_kind", "bits") == "bits"
    token_inputs = bool(inputs) and not isinstance(inputs[0], list)
    grey = {"colorscale": "Greys", "showscale": False, "zmin": 0, "zmax": 1}
    data: list[dict] = []
    if token_inputs:
        # token ids are names, not amounts: plain cells with the id written in
        data.append({"type": "heatmap", "z": [[0] * T], "x": steps, "y": ["token"], "text": [[str(v) for v in inputs]],
                     "texttemplate": "%{text}" if written else "", "colorscale": [[0, "#eef1f5"], [1, "#eef1f5"]], "showscale": False,
                     "yaxis": "y", "xgap": 1, "hovertemplate": "t=%{x}<br>token %{text}<extra>input</extra>"})
    else:
        data.append({"type": "heatmap", "z": _transpose(inputs), "x": steps, **grey, "yaxis": "y",
                     "hovertemplate": "t=%{x} channel %{y}<br>%{z}<extra>input</extra>"})
    if bits:
        data.append({"type": "heatmap", "z": _transpose(targets), "x": steps, **grey, "yaxis": "y2",
                     "hovertemplate": "t=%{x} bit %{y}<br>%{z}<extra>target</extra>"})
        # the colour legend: one bar for the three bit strips (they share the scale)
        data.append({"type": "heatmap", "z": _transpose(outputs), "x": steps, **grey, "yaxis": "y3",
                     "showscale": True,
                     "colorbar": {"title": {"text": "bit / p(1)", "side": "right", "font": {"size": 10}},
                                  "tickvals": [0, 1], "ticktext": ["0 black", "1 white"], "thickness": 8,
                                  "len": 0.75, "y": 0.6, "tickfont": {"size": 9}, "outlinewidth": 1,
                                  "outlinecolor": "#c8ced6"},
                     "hovertemplate": "t=%{x} bit %{y}<br>p=%{z:.3f}<extra>output</extra>"})
    else:
        shown = [t if m else None for t, m in zip(targets, mask or [True] * T)]
        data.append({"type": "heatmap", "z": [[0 if v is None else 1 for v in shown]], "x": steps, "y": ["target"],
                     "text": [["" if v is None else str(v) for v in shown]], "texttemplate": "%{text}" if written else "",
                     "colorscale": [[0, "#ffffff"], [1, "#dde6f3"]], "showscale": False, "zmin": 0, "zmax": 1,
                     "yaxis": "y2", "hovertemplate": "t=%{x}<br>target %{text}<extra></extra>"})
        pred = [max(range(len(p)), key=lambda i: p[i] or 0.0) if p else None for p in outputs]
        conf = [p[k] if p and k is not None else None for p, k in zip(outputs, pred)]
        data.append({"type": "heatmap", "z": [conf], "x": steps, "y": ["predicted"], "text": [[str(k) for k in pred]],
                     "texttemplate": "%{text}" if written else "", "colorscale": [[0, "#ffffff"], [1, "#9ecae1"]], "showscale": False,
                     "zmin": 0, "zmax": 1, "xgap": 1, "yaxis": "y3",
                     "hovertemplate": "t=%{x}<br>predicted %{text} (p=%{z:.3f})<extra></extra>"})
    scored = [bool(m) for m in mask] if mask else [True] * T
    data.append({"type": "bar", "x": steps, "y": [m if m is not None and s else None for m, s in zip(metric, scored)],
                 "yaxis": "y4", "marker": {"color": "#c0392b"},
                 "hovertemplate": "t=%{x}<br>%{y:.3f}<extra>" + metric_name + "</extra>"})
    title = f"{metric_name} per scored position" if scored_metric else f"{metric_name} per step"
    layout = _stacked(4, ["input", "target", "output", title], height=340,
                      weights=[0.3, 0.3, 0.3, 0.12], gap=0.07, span=(edges[0], edges[-1]))
    layout["showlegend"] = False
    if not bits:
        layout["margin"]["r"] = 16
    else:
        layout["margin"]["r"] = 90
    # unscored steps greyed over target, output and metric: their predictions count for nothing
    layout["shapes"] = [{"type": "rect", "xref": "x", "yref": "paper", "x0": edges[lo] - 0.5, "x1": edges[hi + 1] - 0.5,
                         "y0": 0, "y1": layout["yaxis2"]["domain"][1], "fillcolor": "rgba(150,150,150,0.45)",
                         "line": {"width": 0}, "layer": "above", "name": "unscored"}
                        for lo, hi in step_runs([t for t, s in enumerate(scored) if not s])]
    for i in range(3):
        layout[axis_key("y", i)].update(tickfont={"size": 9}, showticklabels=not token_inputs)
    layout["yaxis4"].update(tickfont={"size": 9}, nticks=3, rangemode="tozero")
    return figure(data, layout)


def heads_figure(series: Sequence[Mapping[str, Any]], *, y_title: str, empty: str,
                 edges: Sequence[int] | None = None) -> dict:
    """One slot x timestep heatmap per head (y = slot, x = timestep), on one colour scale
    from 0 to the largest weight: weights spread thinly (a DNC's sum to at most 1) stay
    visible, and heads remain comparable. A reduced trace's columns are time bins
    (`edges`), placed at their timesteps."""
    if not series:
        return empty_figure(empty)
    zmax = max([v for s in series for row in s["w"] for v in row if v is not None] + [WEIGHT_FLOOR])
    n = len(series)
    edges = list(edges) if edges else list(range(len(series[0]["w"]) + 1))
    n_slots = len(series[0]["w"][0]) if series[0]["w"] else 0
    per = 150 if n_slots <= 32 else 220
    layout = _stacked(n, [s["label"] for s in series], height=min(1300, 70 + per * n), span=(edges[0], edges[-1]))
    layout["coloraxis"] = {"colorscale": WEIGHT_SCALE, "cmin": 0, "cmax": zmax,
                           "colorbar": {"len": 0.6, "thickness": 10}}
    data = []
    for i, s in enumerate(series):
        layout[axis_key("y", i)].update(title={"text": y_title}, autorange="reversed")
        data.append({"type": "heatmap", "z": _transpose(s["w"]), "x": bin_centres(edges), "coloraxis": "coloraxis",
                     "yaxis": axis_ref("y", i),
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


def grid_columns(n: int) -> int:
    """Columns of a small-multiples grid: one big panel, two side by side, else four."""
    return 1 if n == 1 else 2 if n <= 4 else 4


def attention_figure(series: Sequence[Mapping[str, Any]], edges: Sequence[int] | None = None,
                     key_bin: int = 1) -> dict:
    """Query x key heatmap per head, as small multiples (one head: one large panel); the
    heads of one site share a colour scale (explicit attention and signed implicit
    attention differ in range), with its colour bar at the right. A reduced trace's rows
    are query bins (`edges`) and its columns key bins `key_bin` wide, both at their timesteps."""
    if not series:
        return empty_figure("no attention sites")
    cols = grid_columns(len(series))
    rows = (len(series) + cols - 1) // cols
    gap_x = 0.1 if cols <= 2 else 0.05
    width = (1.0 - gap_x * (cols - 1)) / cols
    ydoms = stack_domains(rows, gap=min(0.12, 0.3 / rows) if rows > 1 else 0.0)
    per_row = {1: 460, 2: 320, 4: 230}[cols]
    layout = base_layout(height=min(1600, 80 + per_row * rows), margin={"t": 28, "r": 70, "l": 56})
    layout["annotations"] = []
    sites = list(dict.fromkeys(s.get("site") or s["label"] for s in series))
    data = []
    for i, s in enumerate(series):
        r, c = divmod(i, cols)
        x0 = c * (width + gap_x)
        site = s.get("site") or s["label"]
        k = sites.index(site)
        ca = "coloraxis" if k == 0 else f"coloraxis{k + 1}"
        if ca not in layout:  # the site's first head: its scale, one colour bar at the right
            scale = shared_colour_axis([t for t in series if (t.get("site") or t["label"]) == site])
            scale["colorbar"] = {"thickness": 8, "len": 0.5 if len(sites) > 1 else 0.8, "x": 1.01 + 0.07 * k,
                                 "xanchor": "left", "y": 1 - (k + 0.5) / max(len(sites), 1), "yanchor": "middle",
                                 "tickfont": {"size": 9}}
            layout[ca] = scale
        xk, yk = axis_key("x", i), axis_key("y", i)
        bottom, left = r == rows - 1, c == 0
        layout[xk] = axis(domain=[x0, x0 + width], anchor=axis_ref("y", i), showgrid=False,
                          title={"text": "key" if bottom else ""}, tickfont={"size": 9})
        layout[yk] = axis(domain=list(ydoms[r]), anchor=axis_ref("x", i), autorange="reversed", showgrid=False,
                          title={"text": "query t" if left else ""}, tickfont={"size": 9})
        title = s["label"] if cols == 1 else (f"head {s['head']}" if s.get("head") is not None else s["label"])
        layout["annotations"].append(subplot_title(title, x0 + width / 2, ydoms[r][1]))
        placed = {} if not edges else {"y": bin_centres(edges), "x0": (key_bin - 1) / 2, "dx": key_bin}
        data.append({"type": "heatmap", "z": s["w"], **placed, "coloraxis": ca, "xaxis": axis_ref("x", i),
                     "yaxis": axis_ref("y", i),
                     "hovertemplate": "query t=%{y}, key %{x}<br>%{z:.4f}<extra>" + s["label"] + "</extra>"})
    if cols > 1:  # which site the heads are of, once
        layout["title"] = {"text": " · ".join(sites), "x": 0.01, "font": {"size": 12}}
        layout["margin"]["t"] = 48
    return figure(data, layout)


def entropy_figure(series: Sequence[Mapping[str, Any]], T: int, edges: Sequence[int] | None = None) -> dict:
    """The entropy lines over timesteps (a reduced trace: each bin's sharpest step, at its bin)."""
    edges = list(edges) if edges else list(range(max(T, 1) + 1))
    x = bin_centres(edges)
    if not series:
        return empty_figure("no distribution sites here to take the entropy of (implicit attention is signed, not a distribution)")
    band = {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "line": {"width": 0}, "layer": "below"}
    shapes = [{**band, "y0": DIFFUSE_ABOVE, "y1": 1.0, "fillcolor": "rgba(245,176,65,0.2)", "name": "diffuse"},
              {**band, "y0": 0.0, "y1": SHARP_BELOW, "fillcolor": "rgba(93,173,226,0.2)", "name": "sharp"}]
    labels = [{"text": "diffuse", "xref": "paper", "x": 0.005, "y": 0.995, "yref": "y", "xanchor": "left",
               "yanchor": "top", "showarrow": False, "font": {"size": 10, "color": "#9a6b14"}},
              {"text": "sharp", "xref": "paper", "x": 0.005, "y": 0.005, "yref": "y", "xanchor": "left",
               "yanchor": "bottom", "showarrow": False, "font": {"size": 10, "color": "#2471a3"}}]
    dashes = {"read": "solid", "write": "dash", "attention": "dot", "slots": "dashdot"}
    data = [{"type": "scatter", "x": x[:len(s["h"])], "y": s["h"], "mode": "lines+markers" if len(x) <= TEXT_CELLS else "lines",
             "name": s["label"],
             "line": {"dash": dashes.get(s["role"], "solid"), "width": 1.6}, "marker": {"size": 4},
             "hovertemplate": "t=%{x}<br>H/log n = %{y:.3f}<extra>" + s["label"] + "</extra>"} for s in series]
    layout = base_layout(height=270, shapes=shapes, annotations=labels,
                         yaxis={"range": [-0.02, 1.02], "title": {"text": "entropy / log n"}},
                         xaxis={"title": {"text": "timestep"}, "range": [edges[0] - 0.5, edges[-1] - 0.5]},
                         legend={"orientation": "h", "y": -0.3, "font": {"size": 10}})
    return figure(data, layout)
