"""Gradients: how much training signal reaches the memory path versus the bypass.

Per component group, the norm of d loss / d parameters; per timestep, the gradient
reaching the memory reads versus the bypass; and, for a series of checkpoints of one
run, the same over training steps (one gradients job per checkpoint).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from dash import html

from ..api import ApiClient
from ..components import axis, base_layout, empty_figure, export_payload, figure, fmt, log_ticks
from . import jobpage
from .common import checkpoint_title
from .jobpage import FigureCard

PATH = "gradients"
TITLE = "Gradients"
MAX_SERIES = 24
SERIES_SCALE = "Viridis"  # a training series reads in order: early dark, late light


def series_colours(n: int) -> list[str]:
    """n colours along a sequential scale (the last one not the palest yellow)."""
    stops = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b"]
    if n <= 1:
        return [stops[3]]
    return [stops[round(i * (len(stops) - 1) / (n - 1))] for i in range(n)]


def run_of(ckpt: Mapping[str, Any]) -> tuple:
    """What the checkpoints of one training run share: architecture, task, and the name
    without its step number ("ntm-copy-step-000300" and "ntm-copy" are one run)."""
    name = re.sub(r"(?:[-_ ]?step)?[-_ ]?\d+$", "", str(ckpt.get("name") or ""))
    return ckpt.get("arch"), (ckpt.get("task") or {}).get("name"), name


def short_labels(ckpts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Legend labels: "step 300" for the checkpoints of one run at distinct steps, else
    each checkpoint's title (name, and file name where it tells them apart) and step."""
    steps = [c.get("step") for c in ckpts]
    if len(ckpts) > 1 and len({run_of(c) for c in ckpts}) == 1 and len(set(steps)) == len(steps):
        return [f"step {s}" for s in steps]
    return [f"{checkpoint_title(c)} (step {c.get('step', 0)})" for c in ckpts]


def groups_figure(results: Sequence[tuple[str, Mapping[str, Any]]]) -> dict:
    """One bar per checkpoint in each component group: every checkpoint chosen, the legend
    under the plot (never over the bars)."""
    if not results:
        return empty_figure("no result")
    data = []
    colours = series_colours(len(results))
    for (label, r), colour in zip(results, colours):
        groups = r.get("groups") or []
        data.append({"type": "bar", "x": [g.get("name") for g in groups], "y": [g.get("grad_norm") for g in groups],
                     "name": label, "marker": {"color": colour},
                     "customdata": [[g.get("parameters"), g.get("grad_rms")] for g in groups],
                     "hovertemplate": "%{x}<br>norm %{y:.4g}<br>%{customdata[0]} parameters, rms "
                                      "%{customdata[1]:.3g}<extra>" + label + "</extra>"})
    norms = [g.get("grad_norm") for _, r in results for g in r.get("groups") or []]
    rows = -(-len(results) // 4)  # legend rows, about four entries each
    layout = base_layout(height=320 + 20 * rows, barmode="group", bargap=0.25, bargroupgap=0.05,
                         margin={"b": 60 + 20 * rows},
                         legend={"orientation": "h", "x": 0, "y": -0.16, "yanchor": "top", "font": {"size": 10}},
                         yaxis={"title": {"text": "‖∂loss/∂θ‖"}, "type": "log", **log_ticks(norms)})
    return figure(data, layout)


def steps_figure(label: str, r: Mapping[str, Any]) -> dict:
    mem = r.get("memory_per_step") or []
    byp = r.get("bypass_per_step") or []
    if not (mem or byp):
        return empty_figure("no per-timestep gradients in this result")
    data = []
    if mem:
        data.append({"type": "scatter", "x": list(range(len(mem))), "y": mem, "name": "memory reads",
                     "mode": "lines+markers", "line": {"color": "#2c7fb8"},
                     "hovertemplate": "t=%{x}<br>%{y:.4g}<extra>memory reads</extra>"})
    if byp:
        data.append({"type": "scatter", "x": list(range(len(byp))), "y": byp, "name": "bypass",
                     "mode": "lines+markers", "line": {"color": "#d95f0e", "dash": "dash"},
                     "hovertemplate": "t=%{x}<br>%{y:.4g}<extra>bypass</extra>"})
    T = max(len(mem), len(byp))
    layout = base_layout(height=320 + 20, title=label,
                         xaxis={"title": {"text": "timestep"}, "dtick": max(1, -(-T // 12)), "range": [-0.5, T - 0.5]},
                         yaxis={"title": {"text": "gradient norm"}, "type": "log", **log_ticks([*mem, *byp])},
                         legend={"orientation": "h", "y": -0.25, "yanchor": "top"}, margin={"b": 80})
    return figure(data, layout)


def series_figure(points: Sequence[Mapping[str, Any]]) -> dict:
    """points: {"label", "step", "ratio", "memory_total", "bypass_total"} in training order."""
    if len(points) < 2:
        return empty_figure("choose two or more checkpoints of a run")
    use_steps = len({p.get("step") for p in points}) == len(points)
    labels = [p["label"] for p in points]
    x = [p.get("step") for p in points] if use_steps else labels
    data = [
        {"type": "scatter", "x": x, "y": [p.get("ratio") for p in points], "name": "memory / bypass",
         "mode": "lines+markers", "text": labels, "line": {"color": "#31a354", "width": 2.5},
         "hovertemplate": "%{text}<br>ratio %{y:.4g}<extra></extra>"},
        {"type": "scatter", "x": x, "y": [p.get("memory_total") for p in points], "name": "memory reads (total)",
         "mode": "lines", "text": labels, "line": {"color": "#2c7fb8", "dash": "dot"}, "yaxis": "y2",
         "hovertemplate": "%{text}<br>%{y:.4g}<extra>memory</extra>"},
        {"type": "scatter", "x": x, "y": [p.get("bypass_total") for p in points], "name": "bypass (total)",
         "mode": "lines", "text": labels, "line": {"color": "#d95f0e", "dash": "dot"}, "yaxis": "y2",
         "hovertemplate": "%{text}<br>%{y:.4g}<extra>bypass</extra>"},
    ]
    totals = [p.get(k) for p in points for k in ("memory_total", "bypass_total")]
    layout = base_layout(height=360, margin={"r": 64},
                         xaxis={"title": {"text": "training step" if use_steps else "checkpoint"},
                                "type": "linear" if use_steps else "category"},
                         yaxis={"title": {"text": "memory / bypass"}, "type": "log",
                                **log_ticks(p.get("ratio") for p in points)},
                         yaxis2=axis(title={"text": "gradient norm"}, type="log", overlaying="y", side="right",
                                     showgrid=False, **log_ticks(totals)))
    return figure(data, layout)


def summary_table(points: Sequence[Mapping[str, Any]]) -> html.Table:
    """Every checkpoint's numbers, in training order (none left out)."""
    head = html.Thead(html.Tr([html.Th(h) for h in ("checkpoint", "step", "memory / bypass", "memory reads",
                                                    "bypass", "loss")]))
    rows = [html.Tr([html.Td(p["title"]), html.Td(fmt(p.get("step")), className="ms-num"),
                     html.Td(fmt(p.get("ratio"), 3), className="ms-num"),
                     html.Td(fmt(p.get("memory_total"), 3), className="ms-num"),
                     html.Td(fmt(p.get("bypass_total"), 3), className="ms-num"),
                     html.Td(fmt(p.get("loss"), 3), className="ms-num")]) for p in points]
    return html.Table([head, html.Tbody(rows)], className="ms-table ms-table-compact", id="gradients-summary-table")


def result_view(api: ApiClient, results: Mapping[str, Any], ids: Sequence[str]) -> dict:
    ckpts = [c for c in jobpage.checkpoints_in_order(api, ids) if isinstance(results.get(c["id"]), Mapping)]
    labels = short_labels(ckpts)
    labelled = [(label, results[c["id"]]) for c, label in zip(ckpts, labels)]
    points = [{"label": label, "title": checkpoint_title(c), "step": c.get("step"), "ratio": r.get("ratio"),
               "memory_total": r.get("memory_total"), "bypass_total": r.get("bypass_total"), "loss": r.get("loss"),
               "checkpoint_id": c["id"]}
              for c, (label, r) in zip(ckpts, labelled)]
    last = labelled[-1][1] if labelled else {}
    last_title = f"{points[-1]['title']} (step {points[-1]['step']})" if points else ""
    rows = []
    for p, (_, r) in zip(points, labelled):
        row = dict(p)
        for g in r.get("groups") or []:
            row[f"grad_norm {g.get('name')}"] = g.get("grad_norm")
        rows.append(row)
    return {
        "groups": groups_figure(labelled),
        "steps": steps_figure(last_title, last),
        "series": series_figure(points),
        "series_hidden": len(points) < 2,
        "summary": summary_table(points),
        "export": export_payload("gradients", {p["checkpoint_id"]: r for p, (_, r) in zip(points, labelled)}, rows),
    }


PAGE = jobpage.JobPage(
    name=PATH,
    kind="gradients",
    run_label="Measure",
    panels={"summary": "ms-table-wrap"},
    figures={
        "groups": FigureCard("Gradient norm per component group", "gradient-groups",
                             "L2 norm of d loss / d parameters of each group (memory path, controller, output).",
                             half=True),
        "steps": FigureCard("Per timestep: memory reads vs bypass", "gradient-per-step",
                            "Norm of d loss / d (site value at t): how much signal reaches what memory returned, "
                            "and what went around it.", half=True),
        "series": FigureCard("Across the series", "gradient-series", "Ratio of the gradient reaching memory reads "
                             "to that reaching the bypass, over training.", hidden=True),
    },
    more_outputs=(("series_hidden", "gradients-series-card", "hidden"),),
    render=result_view,
    **jobpage.one_job_per_checkpoint(MAX_SERIES, hint="one checkpoint, or a training series",
                                      missing="choose one checkpoint, or several of one training run"),
)

layout, register = PAGE.layout, PAGE.register
