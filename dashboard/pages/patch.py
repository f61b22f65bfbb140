"""Patch: activation patching per site and timestep on clean/corrupted pairs.

Denoising copies a site's value at one timestep from the clean run into the corrupted
run and measures how much of the clean answer comes back (1 = all of it) on the
positions where the two answers differ; noising goes the other way.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import dcc, html

from ..components import (DIVERGING, axis, axis_key, axis_ref, base_layout, empty_figure, export_payload, figure, fmt,
                          stack_domains)
from . import jobpage
from .common import field
from .jobpage import FigureCard

PATH = "patch"
TITLE = "Patch"


def controls(params: Mapping[str, str]) -> list[list]:
    return [
        [jobpage.sites_field(PAGE, params, "every memory site and the bypass")],
        [field("Direction", dcc.RadioItems(
            id="patch-direction", inline=True, className="ms-radio",
            options=[{"label": "denoise (clean → corrupted)", "value": "denoise"},
                     {"label": "noise (corrupted → clean)", "value": "noise"}],
            value=params.get("direction") or "denoise"))],
        [field("Mode", dcc.RadioItems(
            id="patch-mode", inline=True, className="ms-radio",
            options=[{"label": "exact", "value": "exact"}, {"label": "attribution (estimated)", "value": "attribution"},
                     {"label": "attribution, verified", "value": "attribution+verify"}],
            value=params.get("mode") or "exact"))],
    ]


def patching_body(kinds: Sequence[Mapping], sites: Sequence[str] | None, direction: str | None, pairs: Any,
                  seed: Any) -> dict:
    """The POST body, within the server's limits (`kinds`); ValueError names the field."""
    if direction not in ("denoise", "noise"):
        raise ValueError("direction must be denoise or noise")
    body: dict[str, Any] = {
        "pairs": PAGE.number("pairs").parse(kinds, pairs),
        "seed": PAGE.number("seed").parse(kinds, seed),
        "direction": direction,
    }
    if sites:
        body["sites"] = list(sites)
    return body


def _mean_over_elements(row: Sequence) -> list:
    """[t][element] -> [t] (None where every element is None)."""
    out = []
    for cell in row:
        if isinstance(cell, list):
            vals = [v for v in cell if v is not None]
            out.append(sum(vals) / len(vals) if vals else None)
        else:
            out.append(cell)
    return out


def differing_steps(p: Mapping[str, Any]) -> list[int]:
    """Timesteps where the answer differs between clean and corrupted (any pair)."""
    per_step = p.get("differs_per_step")
    if isinstance(per_step, list):
        return [t for t, v in enumerate(per_step) if v]
    return []


def heatmap_figure(p: Mapping[str, Any]) -> dict:
    sites = list(p.get("sites") or [])
    scores = p.get("scores") or []
    if not sites or not scores:
        return empty_figure(p.get("note") or "no patching scores")
    patched = p.get("patched") or []
    per_element = bool(p.get("per_element"))
    z = [_mean_over_elements(r) for r in scores] if per_element else scores
    raw = [_mean_over_elements(r) for r in patched] if per_element and patched else patched
    T = max(len(r) for r in z)
    finite = [abs(v) for r in z for v in r if v is not None]
    top = max([1.0] + finite)
    differs = differing_steps(p)
    per_step = p.get("differs_per_step") if isinstance(p.get("differs_per_step"), list) else None
    n = 2 if per_step else 1
    domains = stack_domains(n, gap=0.04, weights=[0.15, 0.85] if n == 2 else None)
    main_y = axis_ref("y", n - 1)
    layout = base_layout(height=max(280, 130 + 46 * len(sites)), showlegend=False, margin={"l": 150, "t": 24})
    layout["xaxis"] = axis(anchor=main_y, title={"text": "timestep"}, range=[-0.5, T - 0.5], showgrid=False)
    layout[axis_key("y", n - 1)] = axis(domain=list(domains[-1]), anchor="x", autorange="reversed", showgrid=False)
    data: list[dict] = []
    if per_step:
        layout["yaxis"] = axis(domain=list(domains[0]), anchor="x", title={"text": "differs"}, tickfont={"size": 9},
                               nticks=3)
        data.append({"type": "bar", "x": list(range(len(per_step))), "y": per_step, "marker": {"color": "#636363"},
                     "name": "differs", "yaxis": "y",
                     "hovertemplate": "t=%{x}<br>%{y} differing positions<extra></extra>"})
    customdata = [[[r[t] if t < len(r) else None] for t in range(len(r))] for r in raw] if raw else None
    heat = {"type": "heatmap", "z": z, "x": list(range(T)), "y": sites, "yaxis": main_y, "colorscale": DIVERGING,
            "zmin": -top, "zmax": top, "xgap": 1, "ygap": 1,
            "colorbar": {"title": {"text": "recovery" + (" (estimated)" if p.get("label") == "estimated" else "")},
                         "thickness": 10, "len": 0.8},
            "hovertemplate": ("site %{y}<br>t=%{x}<br>recovery %{z:.4f}"
                              + ("<br>patched score %{customdata[0]:.4f}" if customdata else "") + "<extra></extra>")}
    if customdata:
        heat["customdata"] = customdata
    data.append(heat)
    layout["shapes"] = [{"type": "rect", "xref": "x", "yref": main_y, "x0": t - 0.5, "x1": t + 0.5, "y0": -0.5,
                         "y1": len(sites) - 0.5, "line": {"color": "#111", "width": 1.5, "dash": "dot"},
                         "fillcolor": "rgba(0,0,0,0)", "name": "differs"} for t in differs]
    return figure(data, layout)


NO_EFFECT = 1e-6  # a site whose patches move the score less than this has no effect anywhere


def strongest(values: Sequence[float | None], direction: str) -> tuple[int, float] | None:
    """(t, effect) of the patch that matters most, or None when none does. Denoising asks
    how much of the clean answer a patch brings back (the largest recovery); noising asks
    how much of it a patch destroys (the largest drop below 1, where 1 = untouched)."""
    effects = [(t, v if direction == "denoise" else 1.0 - v) for t, v in enumerate(values) if v is not None]
    if not effects:
        return None
    t, effect = max(effects, key=lambda tv: tv[1])
    return None if effect <= NO_EFFECT else (t, effect)


def summary_view(p: Mapping[str, Any]) -> html.Div:
    name = p.get("score_name") or "score"
    direction = p.get("direction") or "denoise"
    label = f"estimated ({p.get('method', 'AtP')})" if p.get("label") == "estimated" else "exact"
    head = (f"{label} · {direction}, {p.get('pairs', '?')} pairs, {p.get('positions', '?')} differing "
            f"positions scored · {name}: clean {fmt(p.get('score_clean'), 4)}, corrupted {fmt(p.get('score_corrupted'), 4)}")
    effect_name = "max recovery" if direction == "denoise" else "largest drop"
    rows = []
    for i, site in enumerate(p.get("sites") or []):
        row = p["scores"][i] if i < len(p.get("scores") or []) else []
        values = _mean_over_elements(row)
        defined = [v for v in values if v is not None]
        if not defined:
            continue
        best = strongest(values, direction)
        cells = ([html.Td(fmt(best[1], 3), className="ms-num"), html.Td(str(best[0]), className="ms-num")] if best
                 else [html.Td("none: no patch moves the answer", colSpan=2, className="ms-dim")])
        rows.append(html.Tr([html.Td(site, className="ms-mono"), *cells,
                             html.Td(fmt(sum(defined) / len(defined), 3), className="ms-num")]))
    table = html.Table([html.Thead(html.Tr([html.Th("site"), html.Th(effect_name), html.Th("at t"),
                                            html.Th("mean over t")])), html.Tbody(rows)],
                       className="ms-table ms-table-compact", id="patch-summary-table")
    meaning = ("Recovery: 1 = the clean answer fully back, 0 = no effect." if direction == "denoise" else
               "Noising patches the clean run: 1 = the clean answer untouched; the largest drop (1 - value) "
               "marks the site and step the answer needs.")
    note = p.get("note")
    v = p.get("verify") or {}
    checked = (f"checked exactly on {v.get('cells')} cells: Spearman {fmt(v.get('spearman'), 3)}, top-10 recall "
               f"{fmt(v.get('top10_recall'), 2)}") if v else None
    return html.Div([html.P(head, className="ms-status"), html.P(checked, className="ms-note") if checked else None, table,
                     html.P(meaning, className="ms-note"),
                     html.P(note, className="ms-note") if note else None])


def result_rows(p: Mapping[str, Any]) -> list[dict]:
    out = []
    patched = p.get("patched") or []
    for i, site in enumerate(p.get("sites") or []):
        row = _mean_over_elements(p["scores"][i])
        raw = _mean_over_elements(patched[i]) if i < len(patched) else []
        for t, v in enumerate(row):
            out.append({"site": site, "t": t, "recovery": v, "patched_score": raw[t] if t < len(raw) else None})
    return out


def result_view(p: Mapping[str, Any]) -> dict:
    return {"heatmap": heatmap_figure(p), "summary": summary_view(p),
            "export": export_payload("patching", p, result_rows(p))}


def submit(page: jobpage.JobPage, kinds: Sequence[Mapping], checkpoint_id: str, sites, direction, mode,
           *numbers: Any) -> tuple[dict, None]:
    body = patching_body(kinds, sites, direction, *numbers)
    if mode and mode != "exact":  # exact is the server's default: its requests stay as before
        body["mode"] = mode
    return {"patching": (checkpoint_id, page.kind, body)}, None


PAGE = jobpage.JobPage(
    name=PATH,
    kind="patching",
    probes=True,  # patch an uploaded prompt-pair probe's clean/corrupted pairs
    controls=controls,
    form=("sites", "direction", "mode"),
    sites_default=(),  # none chosen: the server patches every memory site and the bypass
    numbers={"pairs": "pairs", "seed": "pair seed"},
    run_label="Run patching",
    panels={"summary": None},
    figures={"heatmap": FigureCard(
        "Recovery per site and timestep", "patching-recovery",
        "Normalised recovery of the clean answer when one site is patched at one timestep (1: fully recovered, "
        "0: no effect). Outlined columns: timesteps whose correct answer differs between clean and corrupted. "
        "Hover for exact values.")},
    submit=submit,
    render=lambda api, results, _: result_view(results.get("patching") or {}),
)

layout, register = PAGE.layout, PAGE.register
