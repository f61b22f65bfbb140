"""Patch: activation patching per site and timestep on clean/corrupted pairs.

Denoising copies a site's value at one timestep from the clean run into the corrupted
run and measures how much of the clean answer comes back (1 = all of it) on the
positions where the two answers differ; noising goes the other way.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from ..api import ApiClient
from ..components import (
    DIVERGING,
    axis,
    axis_key,
    axis_ref,
    base_layout,
    empty_figure,
    error_box,
    export_buttons,
    export_payload,
    figure,
    fmt,
    graph_card,
    stack_domains,
)
from .ablate import load_sites
from .common import checkpoint_boot, checkpoint_dropdown, field, job_controls, run_or_poll, split_list, to_int

PATH = "patch"
TITLE = "Patch"
URL_KEYS = ["checkpoint", "sites", "direction", "pairs", "seed"]


def layout(params: Mapping[str, str], context=None) -> html.Div:
    return html.Div(
        [
            dcc.Store(id="patch-boot", data=dict(params)),
            dcc.Store(id="patch-url-keys", data=URL_KEYS),
            html.Span(id="patch-url-sink", hidden=True),
            html.Div(
                [
                    field("Checkpoint", checkpoint_dropdown("patch-checkpoint", params.get("checkpoint")), grow=True),
                    field("Sites", dcc.Dropdown(id="patch-sites", multi=True, value=split_list(params.get("sites")),
                                                options=[{"label": v, "value": v} for v in split_list(params.get("sites"))],
                                                placeholder="every memory site and the bypass",
                                                className="ms-dropdown"), grow=True),
                ],
                className="ms-controls",
            ),
            html.Div(
                [
                    field("Direction", dcc.RadioItems(
                        id="patch-direction", inline=True, className="ms-radio",
                        options=[{"label": "denoise (clean → corrupted)", "value": "denoise"},
                                 {"label": "noise (corrupted → clean)", "value": "noise"}],
                        value=params.get("direction") or "denoise")),
                    field("Pairs", dcc.Input(id="patch-pairs", type="number", min=1, max=256, step=1,
                                             value=params.get("pairs") or 8, className="ms-input ms-input-num")),
                    field("Pair seed", dcc.Input(id="patch-seed", type="number", min=0, step=1,
                                                 value=params.get("seed") or 0, className="ms-input ms-input-num")),
                    html.Button("Run patching", id="patch-run", className="ms-btn ms-btn-primary"),
                    export_buttons("patch"),
                ],
                className="ms-controls",
            ),
            *job_controls("patch"),
            html.Div(id="patch-boot-error"),
            html.Div(id="patch-error"),
            html.Div(id="patch-summary"),
            graph_card("patch-heatmap", "Recovery per site and timestep", filename="patching-recovery",
                       note="Normalised recovery of the clean answer when one site is patched at one timestep "
                            "(1: fully recovered, 0: no effect). Outlined columns: timesteps whose correct answer "
                            "differs between clean and corrupted. Hover for exact values."),
        ],
        className="ms-page",
    )


def patching_body(sites: Sequence[str] | None, direction: str | None, pairs: Any, seed: Any) -> dict:
    if direction not in ("denoise", "noise"):
        raise ValueError("direction must be denoise or noise")
    body: dict[str, Any] = {
        "pairs": to_int(pairs, default=8, minimum=1, maximum=256, name="pairs"),
        "seed": to_int(seed, default=0, minimum=0, name="pair seed"),
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
            "colorbar": {"title": {"text": "recovery"}, "thickness": 10, "len": 0.8},
            "hovertemplate": ("site %{y}<br>t=%{x}<br>recovery %{z:.4f}"
                              + ("<br>patched score %{customdata[0]:.4f}" if customdata else "") + "<extra></extra>")}
    if customdata:
        heat["customdata"] = customdata
    data.append(heat)
    layout["shapes"] = [{"type": "rect", "xref": "x", "yref": main_y, "x0": t - 0.5, "x1": t + 0.5, "y0": -0.5,
                         "y1": len(sites) - 0.5, "line": {"color": "#111", "width": 1.5, "dash": "dot"},
                         "fillcolor": "rgba(0,0,0,0)", "name": "differs"} for t in differs]
    return figure(data, layout)


def summary_view(p: Mapping[str, Any]) -> html.Div:
    name = p.get("score_name") or "score"
    head = (f"{p.get('direction', 'denoise')}, {p.get('pairs', '?')} pairs, {p.get('positions', '?')} differing "
            f"positions scored · {name}: clean {fmt(p.get('score_clean'), 4)}, corrupted {fmt(p.get('score_corrupted'), 4)}")
    rows = []
    for i, site in enumerate(p.get("sites") or []):
        row = p["scores"][i] if i < len(p.get("scores") or []) else []
        vals = [(t, v) for t, v in enumerate(_mean_over_elements(row)) if v is not None]
        if vals:
            t_max, v_max = max(vals, key=lambda tv: tv[1])
            mean = sum(v for _, v in vals) / len(vals)
            rows.append(html.Tr([html.Td(site, className="ms-mono"), html.Td(fmt(v_max, 3), className="ms-num"),
                                 html.Td(str(t_max), className="ms-num"), html.Td(fmt(mean, 3), className="ms-num")]))
    table = html.Table([html.Thead(html.Tr([html.Th("site"), html.Th("max recovery"), html.Th("at t"),
                                            html.Th("mean over t")])), html.Tbody(rows)], className="ms-table ms-table-compact")
    note = p.get("note")
    return html.Div([html.P(head, className="ms-status"), table, html.P(note, className="ms-note") if note else None])


def result_rows(p: Mapping[str, Any]) -> list[dict]:
    out = []
    patched = p.get("patched") or []
    for i, site in enumerate(p.get("sites") or []):
        row = _mean_over_elements(p["scores"][i])
        raw = _mean_over_elements(patched[i]) if i < len(patched) else []
        for t, v in enumerate(row):
            out.append({"site": site, "t": t, "recovery": v, "patched_score": raw[t] if t < len(raw) else None})
    return out


def run_step(api: ApiClient, trigger: Any, checkpoint_id, sites, direction, pairs, seed, state: Mapping | None) -> dict:
    out = {"heatmap": no_update, "summary": no_update, "export": no_update}
    requests = None
    if trigger == "patch-run":
        if not checkpoint_id:
            return {**out, "jobs": None, "poll_disabled": True, "progress": no_update, "error": "choose a checkpoint first"}
        try:
            body = patching_body(sites, direction, pairs, seed)
        except ValueError as exc:
            return {**out, "jobs": state, "poll_disabled": True, "progress": no_update, "error": str(exc)}
        requests = {"patching": (checkpoint_id, "patching", body)}
        out.update(heatmap=empty_figure("running..."), summary=None)
    step = run_or_poll(api, trigger, "patch-run", requests, (state or {}).get("jobs"))
    if step["results"] is not None:
        p = step["results"].get("patching") or {}
        out.update(heatmap=heatmap_figure(p), summary=summary_view(p),
                   export=export_payload("patching", p, result_rows(p)))
    return {**out, "jobs": {"jobs": step["jobs"]}, "poll_disabled": step["poll_disabled"],
            "progress": step["progress"], "error": step["error"]}


def register(app, context) -> None:
    @app.callback(
        Output("patch-checkpoint", "options"),
        Output("patch-boot-error", "children"),
        Input("patch-boot", "data"),
        State("token-input", "value"),
    )
    def _boot(boot, token):
        with context.client(token) as api:
            return checkpoint_boot(api, boot)

    @app.callback(
        Output("patch-sites", "options"),
        Output("patch-error", "children", allow_duplicate=True),
        Input("patch-checkpoint", "value"),
        State("token-input", "value"),
        prevent_initial_call="initial_duplicate",
    )
    def _sites(checkpoint_id, token):
        with context.client(token) as api:
            options, _, error = load_sites(api, checkpoint_id, [])
        return options, error

    @app.callback(
        Output("patch-jobs", "data"),
        Output("patch-poll", "disabled"),
        Output("patch-progress", "children"),
        Output("patch-error", "children"),
        Output("patch-heatmap", "figure"),
        Output("patch-summary", "children"),
        Output({"type": "result", "name": "patch"}, "data"),
        Input("patch-run", "n_clicks"),
        Input("patch-poll", "n_intervals"),
        State("patch-checkpoint", "value"),
        State("patch-sites", "value"),
        State("patch-direction", "value"),
        State("patch-pairs", "value"),
        State("patch-seed", "value"),
        State("patch-jobs", "data"),
        State("token-input", "value"),
        prevent_initial_call=True,
    )
    def _run(_clicks, _tick, checkpoint_id, sites, direction, pairs, seed, state, token):
        with context.client(token) as api:
            out = run_step(api, ctx.triggered_id, checkpoint_id, sites, direction, pairs, seed, state)
        return (out["jobs"], out["poll_disabled"], out["progress"], error_box(out["error"]), out["heatmap"],
                out["summary"], out["export"])

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "syncUrl"),
        Output("patch-url-sink", "children"),
        Input("patch-checkpoint", "value"),
        Input("patch-sites", "value"),
        Input("patch-direction", "value"),
        Input("patch-pairs", "value"),
        Input("patch-seed", "value"),
        State("patch-url-keys", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "rememberCheckpoint"),
        Output("current-checkpoint", "data", allow_duplicate=True),
        Input("patch-checkpoint", "value"),
        prevent_initial_call="initial_duplicate",
    )
