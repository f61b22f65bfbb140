"""Gradients: how much training signal reaches the memory path versus the bypass.

Per component group, the norm of d loss / d parameters; per timestep, the gradient
reaching the memory reads versus the bypass; and, for a series of checkpoints of one
run, the same over training steps (one gradients job per checkpoint).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..api import ApiClient
from ..components import axis, base_layout, empty_figure, export_payload, figure, fmt
from . import jobpage
from .jobpage import FigureCard

PATH = "gradients"
TITLE = "Gradients"
MAX_SERIES = 24


def groups_figure(results: Sequence[tuple[str, Mapping[str, Any]]]) -> dict:
    if not results:
        return empty_figure("no result")
    data = []
    for label, r in results[:6]:
        groups = r.get("groups") or []
        data.append({"type": "bar", "x": [g.get("name") for g in groups], "y": [g.get("grad_norm") for g in groups],
                     "name": label, "customdata": [[g.get("parameters"), g.get("grad_rms")] for g in groups],
                     "hovertemplate": "%{x}<br>norm %{y:.4g}<br>%{customdata[0]} parameters, rms "
                                      "%{customdata[1]:.3g}<extra>" + label + "</extra>"})
    layout = base_layout(height=320, barmode="group",
                         yaxis={"title": {"text": "‖∂loss/∂θ‖"}, "type": "log", "tickformat": ".3g"})
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
    layout = base_layout(height=320, title=label, xaxis={"title": {"text": "timestep"}},
                         yaxis={"title": {"text": "gradient norm"}, "type": "log", "tickformat": ".3g"},
                         legend={"orientation": "h", "y": -0.25})
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
    layout = base_layout(height=340, xaxis={"title": {"text": "training step" if use_steps else "checkpoint"},
                                            "type": "linear" if use_steps else "category"},
                         yaxis={"title": {"text": "memory / bypass"}, "type": "log", "tickformat": ".3g"},
                         yaxis2=axis(title={"text": "gradient norm"}, type="log", overlaying="y", side="right",
                                     showgrid=False, tickformat=".3g"))
    return figure(data, layout)


def result_view(api: ApiClient, results: Mapping[str, Any], ids: Sequence[str]) -> dict:
    ckpts = jobpage.checkpoints_in_order(api, ids)
    labelled = [(f"{c.get('name') or c['id']} (step {c.get('step', 0)})", results[c["id"]])
                for c in ckpts if isinstance(results.get(c["id"]), Mapping)]
    points = [{"label": label, "step": c.get("step"), "ratio": r.get("ratio"), "memory_total": r.get("memory_total"),
               "bypass_total": r.get("bypass_total"), "loss": r.get("loss"), "checkpoint_id": c["id"]}
              for c, (label, r) in zip(ckpts, labelled)]
    last_label, last = labelled[-1] if labelled else ("", {})
    rows = []
    for p, (_, r) in zip(points, labelled):
        row = dict(p)
        for g in r.get("groups") or []:
            row[f"grad_norm {g.get('name')}"] = g.get("grad_norm")
        rows.append(row)
    summary = " · ".join(f"{p['label']}: memory/bypass {fmt(p['ratio'], 3)}" for p in points[-4:])
    return {
        "groups": groups_figure(labelled),
        "steps": steps_figure(last_label, last),
        "series": series_figure(points),
        "series_hidden": len(points) < 2,
        "summary": summary,
        "export": export_payload("gradients", {p["checkpoint_id"]: r for p, (_, r) in zip(points, labelled)}, rows),
    }


PAGE = jobpage.JobPage(
    name=PATH,
    kind="gradients",
    run_label="Measure",
    panels={"summary": "ms-status"},
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
