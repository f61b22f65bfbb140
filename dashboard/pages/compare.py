"""Compare: two checkpoints, or a series, side by side: verdict, reliance with its
interval, addressing entropy, slot utilization and the memory/bypass gradient ratio,
each from the checkpoint's report job (reused by the server when it has run before).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import html

from ..api import ApiClient
from ..components import (VERDICT_COLOURS, axis, axis_key, axis_ref, base_layout, empty_figure, export_payload, figure, fmt, get_path,
                          mean, subplot_title, verdict_badge)
from . import jobpage
from .jobpage import FigureCard

PATH = "compare"
TITLE = "Compare"
MAX_COMPARE = 16


def summarise(report: Mapping[str, Any]) -> dict:
    """The comparable numbers of one report."""
    rel = report.get("reliance") or {}
    ent_sites = get_path(report, "entropy.sites", default=[]) or []
    reads = [s for s in ent_sites if s.get("kind") == "read_weights"] or ent_sites
    slots = get_path(report, "utilization.slots", default=[]) or []
    read_slots = [s for s in slots if s.get("kind") == "read_weights"] or slots
    states = get_path(report, "utilization.states", default=[]) or []
    ci = rel.get("ci95") or [None, None]
    return {
        "verdict": rel.get("verdict"),
        "score": rel.get("score"),
        "ci_low": ci[0] if len(ci) > 0 else None,
        "ci_high": ci[1] if len(ci) > 1 else None,
        "metric_name": get_path(report, "metric.name", "reliance.metric_name"),
        "metric_clean": get_path(report, "metric.clean", "reliance.metric_clean"),
        "metric_chance": get_path(report, "metric.chance", "reliance.chance"),
        "prob_change": rel.get("prob_change"),
        "entropy": mean(s.get("mean") for s in reads),
        "entropy_label": reads[0].get("label") if reads else None,
        "effective_slots": mean(s.get("effective_slots") for s in read_slots),
        "slots": read_slots[0].get("slots") if read_slots else None,
        "effective_rank": mean(s.get("mean_effective_rank") for s in states),
        "gradient_ratio": get_path(report, "gradients.ratio"),
    }


def comparison_table(columns: Sequence[tuple[Mapping[str, Any], dict]]) -> html.Table:
    def row(label, cell):
        return html.Tr([html.Th(label)] + [html.Td(cell(c, s)) for c, s in columns])

    rows = [
        row("verdict", lambda c, s: verdict_badge(s["verdict"])),
        row("reliance (95% CI)", lambda c, s: f"{fmt(s['score'], 2)} [{fmt(s['ci_low'], 2)}, {fmt(s['ci_high'], 2)}]"),
        row("metric (chance)", lambda c, s: f"{s['metric_name'] or 'metric'} {fmt(s['metric_clean'], 3)} "
                                            f"({fmt(s['metric_chance'], 3)})"),
        row("output change when reads are resampled", lambda c, s: fmt(s["prob_change"], 3)),
        row("read entropy (normalised)", lambda c, s: f"{fmt(s['entropy'], 2)} {s['entropy_label'] or ''}".strip()),
        row("effective slots", lambda c, s: f"{fmt(s['effective_slots'], 1)} of {fmt(s['slots'])}"
            if s["slots"] else (f"state rank {fmt(s['effective_rank'], 1)}" if s["effective_rank"] else "n/a")),
        row("gradient memory / bypass", lambda c, s: fmt(s["gradient_ratio"], 3)),
    ]
    head = html.Thead(html.Tr([html.Th("")] + [
        html.Th([html.Div(c.get("name") or c["id"]), html.Div(f"{c.get('arch', '')} · step {c.get('step', 0)}",
                                                             className="ms-dim")]) for c, _ in columns]))
    return html.Table([head, html.Tbody(rows)], className="ms-table ms-compare", id="compare-result")


def comparison_figure(columns: Sequence[tuple[Mapping[str, Any], dict]]) -> dict:
    if not columns:
        return empty_figure("no reports")
    labels = [f"{c.get('name') or c['id']}<br>step {c.get('step', 0)}" for c, _ in columns]
    s = [x for _, x in columns]
    colors = VERDICT_COLOURS
    titles = ["reliance (95% CI)", "read entropy", "effective slots", "gradient memory / bypass"]
    gap = 0.07
    width = (1 - gap * 3) / 4
    layout = base_layout(height=360, showlegend=False, margin={"t": 40, "b": 90})
    layout["annotations"] = []
    for i, title in enumerate(titles):
        x0 = i * (width + gap)
        layout[axis_key("x", i)] = axis(domain=[x0, x0 + width], anchor=axis_ref("y", i), tickangle=-30,
                                        tickfont={"size": 10})
        layout[axis_key("y", i)] = axis(anchor=axis_ref("x", i), **({"range": [0, 1.05]} if i < 2 else {}))
        layout["annotations"].append(subplot_title(title, x0 + width / 2, 1.0))

    def err(v, hi):
        if None in (v["ci_low"], v["ci_high"], v["score"]):
            return 0
        return (v["ci_high"] - v["score"]) if hi else (v["score"] - v["ci_low"])

    data = [
        {"type": "bar", "x": labels, "y": [v["score"] for v in s], "xaxis": "x", "yaxis": "y",
         "marker": {"color": [colors.get(v["verdict"], "#999") for v in s]},
         "error_y": {"type": "data", "symmetric": False, "array": [err(v, True) for v in s],
                     "arrayminus": [err(v, False) for v in s]},
         "text": [f"{fmt(v['score'], 2)} {v['verdict'] or ''}" for v in s], "textposition": "outside",
         "cliponaxis": False, "hovertemplate": "%{x}<br>%{y:.3f}<br>%{text}<extra></extra>"},
        {"type": "bar", "x": labels, "y": [v["entropy"] for v in s], "xaxis": "x2", "yaxis": "y2",
         "marker": {"color": "#756bb1"}, "hovertemplate": "%{x}<br>%{y:.3f}<extra></extra>"},
        {"type": "bar", "x": labels, "y": [v["effective_slots"] for v in s], "xaxis": "x3", "yaxis": "y3",
         "marker": {"color": "#3182bd"}, "hovertemplate": "%{x}<br>%{y:.2f}<extra></extra>"},
        {"type": "bar", "x": labels, "y": [v["gradient_ratio"] for v in s], "xaxis": "x4", "yaxis": "y4",
         "marker": {"color": "#31a354"}, "hovertemplate": "%{x}<br>%{y:.4g}<extra></extra>"},
    ]
    return figure(data, layout)


def result_view(api: ApiClient, results: Mapping[str, Any], ids: Sequence[str]) -> dict:
    ckpts = jobpage.checkpoints_in_order(api, ids)
    columns = [(c, summarise(results[c["id"]])) for c in ckpts if isinstance(results.get(c["id"]), Mapping)]
    rows = [{"checkpoint_id": c["id"], "name": c.get("name"), "step": c.get("step"), **s} for c, s in columns]
    return {"table": comparison_table(columns), "figure": comparison_figure(columns),
            "export": export_payload("compare", {c["id"]: results[c["id"]] for c, _ in columns}, rows)}


PAGE = jobpage.JobPage(
    name=PATH,
    kind="report",
    run_label="Compare",
    panels={"table": "ms-table-wrap"},
    figures={"figure": FigureCard("Side by side", "compare", "Reliance score with its 95% interval, mean "
                                  "normalised entropy of the read weights, effective slots used, and the "
                                  "memory/bypass gradient ratio.")},
    render=result_view,
    **jobpage.one_job_per_checkpoint(MAX_COMPARE, hint="two or more checkpoints",
                                      missing="choose two or more checkpoints (or one, to see its report)"),
)

layout, register = PAGE.layout, PAGE.register
