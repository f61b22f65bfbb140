"""Compare: two checkpoints, or a series, side by side: verdict, reliance with its
interval, addressing entropy, slot utilization and the memory/bypass gradient ratio,
each from the checkpoint's report job (reused by the server when it has run before).

Columns keep the order the checkpoints were chosen in. Each number says what it was taken
from: the entropy of read weights, or of attention patterns where a model has no read
weights (a hybrid's attention layer); effective slots, or the effective rank of the
state for linear memory (both drawn in one chart). Weight spread evenly over every slot
is said to pick nothing out, not to use every slot, and the verdict's warnings (a
collapsed memory) stand under the table.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import html

from ..api import ApiClient, ApiError
from ..components import (DIFFUSE_ABOVE, VERDICT_COLOURS, estimate_text, axis, axis_key, axis_ref, base_layout, empty_figure,
                          export_payload, figure, fmt, get_path, mean, subplot_title, verdict_badge, warnings_row)
from . import jobpage
from .common import checkpoint_title
from .jobpage import FigureCard

PATH = "compare"
TITLE = "Compare"
MAX_COMPARE = 16


def summarise(report: Mapping[str, Any]) -> dict:
    """The comparable numbers of one report, with what each was taken from."""
    rel = report.get("reliance") or {}
    ent_sites = get_path(report, "entropy.sites", default=[]) or []
    reads = [s for s in ent_sites if s.get("kind") == "read_weights"]
    addressing = reads or [s for s in ent_sites if s.get("kind") == "attention"]
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
        "entropy": mean(s.get("mean") for s in addressing),
        "entropy_label": addressing[0].get("label") if addressing else None,
        "entropy_of": ("read weights" if reads else "attention " + ", ".join(s.get("name", "?") for s in addressing))
        if addressing else None,
        "effective_slots": mean(s.get("effective_slots") for s in read_slots),
        "slots": read_slots[0].get("slots") if read_slots else None,
        "effective_rank": mean(s.get("mean_effective_rank") for s in states),
        "max_rank": states[0].get("max_rank") if states else None,
        "gradient_ratio": get_path(report, "gradients.ratio"),
        "attribution_share": get_path(report, "gradients.attribution_share"),
        "sufficiency": rel.get("sufficiency"),
        "bypass_necessity": get_path(rel, "components.bypass.necessity"),
        "warnings": list(rel.get("warnings") or []),
    }


def entropy_text(s: Mapping[str, Any]) -> str:
    if s["entropy"] is None:
        return "n/a (no read weights or attention patterns)"
    text = f"{fmt(s['entropy'], 2)} {s['entropy_label'] or ''}".strip()
    if s["entropy"] > DIFFUSE_ABOVE:
        text += ", spread over everything: nothing picked out"
    return f"{text} · {s['entropy_of']}"


def slots_text(s: Mapping[str, Any]) -> str:
    if s["slots"]:
        text = f"{fmt(s['effective_slots'], 1)} of {fmt(s['slots'])}"
        if s["effective_slots"] is not None and s["effective_slots"] > DIFFUSE_ABOVE * s["slots"]:
            text += " · weight spread evenly, no slot picked out"
        return text
    if s["effective_rank"] is not None:
        return f"state rank {fmt(s['effective_rank'], 1)}" + (f" of {fmt(s['max_rank'])}" if s["max_rank"] else "")
    return "n/a"


def reliance_text(s: Mapping[str, Any]) -> str:
    return f"{fmt(s['score'], 2)} [{fmt(s['ci_low'], 2)}, {fmt(s['ci_high'], 2)}]"




def column_title(c: Mapping[str, Any]) -> str:
    return checkpoint_title(c)


def comparison_table(columns: Sequence[tuple[Mapping[str, Any], dict]]) -> html.Div:
    def row(label, cell):
        return html.Tr([html.Th(label)] + [html.Td(cell(c, s)) for c, s in columns])

    rows = [
        row("verdict", lambda c, s: [verdict_badge(s["verdict"]), warnings_row({"reliance": {"warnings": s["warnings"]}})]),
        row("memory necessity (95% CI)", lambda c, s: reliance_text(s)),
        row("memory sufficiency (95% CI)", lambda c, s: estimate_text(s["sufficiency"])),
        row("bypass necessity (95% CI)", lambda c, s: estimate_text(s["bypass_necessity"])),
        row("metric (chance)", lambda c, s: f"{s['metric_name'] or 'metric'} {fmt(s['metric_clean'], 3)} "
                                            f"({fmt(s['metric_chance'], 3)})"),
        row("output change without memory (mean ablation)", lambda c, s: fmt(s["prob_change"], 3)),
        row("addressing entropy (normalised)", lambda c, s: entropy_text(s)),
        row("effective slots (or state rank)", lambda c, s: slots_text(s)),
        row("memory's share of gradient x activation", lambda c, s: fmt(s["attribution_share"], 2)),
        row("gradient-norm ratio memory / bypass (diagnostic)", lambda c, s: fmt(s["gradient_ratio"], 3)),
    ]
    head = html.Thead(html.Tr([html.Th("")] + [
        html.Th([html.Div(column_title(c)), html.Div(f"{c.get('arch', '')} · step {c.get('step', 0)}",
                                                     className="ms-dim")]) for c, _ in columns]))
    return html.Table([head, html.Tbody(rows)], className="ms-table ms-compare", id="compare-result")


def comparison_figure(columns: Sequence[tuple[Mapping[str, Any], dict]]) -> dict:
    if not columns:
        return empty_figure("no reports")
    labels = [f"{column_title(c)}<br>step {c.get('step', 0)}" for c, _ in columns]
    s = [x for _, x in columns]
    colors = VERDICT_COLOURS
    titles = ["reliance (95% CI)", "addressing entropy", "effective slots / state rank", "gradient memory / bypass"]
    gap = 0.07
    width = (1 - gap * 3) / 4
    layout = base_layout(height=360, showlegend=False, margin={"t": 40, "b": 90})
    layout["annotations"] = []
    for i, title in enumerate(titles):
        x0 = i * (width + gap)
        layout[axis_key("x", i)] = axis(domain=[x0, x0 + width], anchor=axis_ref("y", i), tickangle=-30,
                                        tickfont={"size": 10})
        # the reliance bars carry their score above them: room for it under the title
        ranges = {0: {"range": [0, 1.25], "tickvals": [0, 0.2, 0.4, 0.6, 0.8, 1.0]}, 1: {"range": [0, 1.05]}}
        layout[axis_key("y", i)] = axis(anchor=axis_ref("x", i), **ranges.get(i, {}))
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
         "customdata": [v["entropy_of"] or "" for v in s],
         "marker": {"color": "#756bb1"}, "hovertemplate": "%{x}<br>%{y:.3f} (%{customdata})<extra></extra>"},
        {"type": "bar", "x": labels, "y": [v["effective_slots"] if v["slots"] else v["effective_rank"] for v in s],
         "xaxis": "x3", "yaxis": "y3", "customdata": [slots_text(v) for v in s],
         "marker": {"color": ["#3182bd" if v["slots"] else "#6baed6" for v in s]},
         "hovertemplate": "%{x}<br>%{customdata}<extra></extra>"},
        {"type": "bar", "x": labels, "y": [v["gradient_ratio"] for v in s], "xaxis": "x4", "yaxis": "y4",
         "marker": {"color": "#31a354"}, "hovertemplate": "%{x}<br>%{y:.4g}<extra></extra>"},
    ]
    return figure(data, layout)


def checkpoints_as_chosen(api: ApiClient, ids: Sequence[str]) -> list[Mapping[str, Any]]:
    """The chosen checkpoints in the order they were chosen (their ids alone when the
    list cannot be had)."""
    try:
        by_id = {c["id"]: c for c in api.checkpoints()}
    except ApiError:
        by_id = {}
    return [by_id.get(i) or {"id": i, "name": i} for i in ids]


def result_view(api: ApiClient, results: Mapping[str, Any], ids: Sequence[str]) -> dict:
    ckpts = checkpoints_as_chosen(api, ids)
    columns = [(c, summarise(results[c["id"]])) for c in ckpts if isinstance(results.get(c["id"]), Mapping)]
    rows = [{"checkpoint_id": c["id"], "name": c.get("name"), "file_name": c.get("file_name"), "step": c.get("step"),
             **{k: v for k, v in s.items() if k != "warnings"}, "warnings": " | ".join(map(str, s["warnings"]))}
            for c, s in columns]
    return {"table": comparison_table(columns), "figure": comparison_figure(columns),
            "export": export_payload("compare", {c["id"]: results[c["id"]] for c, _ in columns}, rows)}


PAGE = jobpage.JobPage(
    name=PATH,
    kind="report",
    run_label="Compare",
    panels={"table": "ms-table-wrap"},
    figures={"figure": FigureCard("Side by side", "compare", "Reliance score with its 95% interval, mean "
                                  "normalised entropy of the read weights (or, without them, of the attention "
                                  "patterns), effective slots used (or the state's effective rank, lighter), and "
                                  "the memory/bypass gradient ratio.")},
    render=result_view,
    **jobpage.one_job_per_checkpoint(MAX_COMPARE, hint="two or more checkpoints",
                                      missing="choose two or more checkpoints (or one, to see its report)"),
)

layout, register = PAGE.layout, PAGE.register
