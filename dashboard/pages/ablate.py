"""Ablate: replace chosen sites (zero, mean or resample) at chosen timesteps and see what
the task metric and the outputs lose, next to the checkpoint's reliance verdict.

A run starts two jobs: the ablation asked for, and the checkpoint's report (the verdict:
every memory read resample-ablated, with a bootstrap interval), which the server answers
from its stored result when it has run before.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from ..api import ApiClient, ApiError
from ..components import (
    axis,
    base_layout,
    empty_figure,
    error_box,
    export_buttons,
    export_payload,
    figure,
    flatten,
    fmt,
    get_path,
    graph_card,
    verdict_badge,
)
from .common import (
    checkpoint_boot,
    checkpoint_dropdown,
    field,
    job_controls,
    parse_timesteps,
    run_or_poll,
    site_options,
    sites_of_kind,
    split_list,
    to_int,
)

PATH = "ablate"
TITLE = "Ablate"
URL_KEYS = ["checkpoint", "sites", "mode", "steps", "samples", "seed"]
MODES = [("zero", "zero"), ("mean", "mean (over sequences, per step)"), ("resample", "resample (another input's value)")]


def layout(params: Mapping[str, str], context=None) -> html.Div:
    return html.Div(
        [
            dcc.Store(id="ablate-boot", data=dict(params)),
            dcc.Store(id="ablate-url-keys", data=URL_KEYS),
            html.Span(id="ablate-url-sink", hidden=True),
            html.Div(
                [
                    field("Checkpoint", checkpoint_dropdown("ablate-checkpoint", params.get("checkpoint")), grow=True),
                    field("Sites", dcc.Dropdown(id="ablate-sites", multi=True, value=split_list(params.get("sites")),
                                                options=[{"label": v, "value": v} for v in split_list(params.get("sites"))],
                                                placeholder="memory reads", className="ms-dropdown"), grow=True),
                ],
                className="ms-controls",
            ),
            html.Div(
                [
                    field("Mode", dcc.RadioItems(id="ablate-mode", options=[{"label": l, "value": v} for v, l in MODES],
                                                 value=params.get("mode") or "resample", inline=True,
                                                 className="ms-radio")),
                    field("Timesteps", dcc.Input(id="ablate-steps", type="text", value=params.get("steps") or "all",
                                                 placeholder="all, or 3-7, 12", debounce=True,
                                                 className="ms-input")),
                    field("Sequences", dcc.Input(id="ablate-samples", type="number", min=2, max=512, step=1,
                                                 value=params.get("samples") or 32, className="ms-input ms-input-num")),
                    field("Seed", dcc.Input(id="ablate-seed", type="number", min=0, step=1,
                                            value=params.get("seed") or 0, className="ms-input ms-input-num")),
                    html.Button("Run ablation", id="ablate-run", className="ms-btn ms-btn-primary"),
                    export_buttons("ablate"),
                ],
                className="ms-controls",
            ),
            *job_controls("ablate"),
            html.Div(id="ablate-boot-error"),
            html.Div(id="ablate-error"),
            html.Div(id="ablate-verdict", className="ms-verdict-wrap"),
            html.Div(id="ablate-summary"),
            html.Div(
                [
                    graph_card("ablate-metric", "Task metric per timestep: clean vs ablated", filename="ablation-metric",
                               note="Shaded: the ablated timesteps."),
                    graph_card("ablate-change", "Output change per timestep", filename="ablation-output-change",
                               note="Mean absolute change of the output probabilities, and the share of "
                                    "predictions that flip."),
                ],
                className="ms-grid-2",
            ),
        ],
        className="ms-page",
    )


def ablation_body(sites: Sequence[str] | None, mode: str | None, steps_text: str | None, samples: Any,
                  seed: Any) -> dict:
    """The POST body for one ablation; ValueError names the field at fault."""
    if not sites:
        raise ValueError("choose at least one site to ablate")
    if mode not in {m for m, _ in MODES}:
        raise ValueError(f"mode must be one of {', '.join(m for m, _ in MODES)}")
    steps = parse_timesteps(steps_text)
    return {
        "samples": to_int(samples, default=32, minimum=2, maximum=512, name="sequences"),
        "seed": to_int(seed, default=0, minimum=0, name="seed"),
        "specs": [{"sites": list(sites), "mode": mode, "steps": steps}],
    }


def metric_figure(a: Mapping[str, Any], steps: Sequence[int] | None) -> dict:
    clean = a.get("metric_clean_per_step") or []
    ablated = a.get("metric_per_step") or []
    if not (clean or ablated):
        return empty_figure("this result has no per-step metric")
    name = a.get("metric_name") or "metric"
    T = max(len(clean), len(ablated))
    shapes = [{"type": "rect", "xref": "x", "yref": "paper", "x0": lo - 0.5, "x1": hi + 0.5, "y0": 0, "y1": 1,
               "fillcolor": "rgba(245,176,65,0.18)", "line": {"width": 0}, "layer": "below"}
              for lo, hi in _runs(steps or [])]
    data = [
        {"type": "scatter", "x": list(range(len(clean))), "y": clean, "name": "clean", "mode": "lines+markers",
         "line": {"color": "#2c7fb8"}, "hovertemplate": "t=%{x}<br>%{y:.4f}<extra>clean</extra>"},
        {"type": "scatter", "x": list(range(len(ablated))), "y": ablated, "name": "ablated", "mode": "lines+markers",
         "line": {"color": "#d7301f", "dash": "dash"}, "hovertemplate": "t=%{x}<br>%{y:.4f}<extra>ablated</extra>"},
    ]
    layout = base_layout(height=320, shapes=shapes,
                         xaxis={"title": {"text": "timestep"}, "range": [-0.5, max(T, 1) - 0.5]},
                         yaxis={"title": {"text": f"{name} (mean per step)"}})
    return figure(data, layout)


def change_figure(a: Mapping[str, Any]) -> dict:
    dp = a.get("prob_change_per_step") or []
    flips = a.get("flip_rate_per_step") or []
    kl = a.get("kl_per_step") or []
    if not (dp or flips):
        return empty_figure("this result has no per-step output change")
    data = [
        {"type": "bar", "x": list(range(len(dp))), "y": dp, "name": "mean |Δp|", "marker": {"color": "#8856a7"},
         "customdata": kl, "hovertemplate": "t=%{x}<br>|Δp| %{y:.4f}<br>KL %{customdata:.4g}<extra></extra>"},
        {"type": "scatter", "x": list(range(len(flips))), "y": flips, "name": "flipped", "mode": "lines+markers",
         "yaxis": "y2", "line": {"color": "#e6550d"}, "hovertemplate": "t=%{x}<br>%{y:.1%} flipped<extra></extra>"},
    ]
    layout = base_layout(height=320, xaxis={"title": {"text": "timestep"}},
                         yaxis={"title": {"text": "mean |Δp|"}, "rangemode": "tozero"},
                         yaxis2=axis(title={"text": "share flipped"}, overlaying="y", side="right", range=[0, 1],
                                     tickformat=".0%", dtick=0.25, showgrid=False))
    return figure(data, layout)


def _runs(steps: Sequence[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(steps)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def verdict_panel(reliance: Mapping[str, Any] | None, note: str | None = None) -> html.Div:
    if not reliance:
        return html.Div(note or "", className="ms-note")
    ci = reliance.get("ci95") or [None, None]
    return html.Div(
        [
            html.Div(
                [
                    html.Span("Memory reliance", className="ms-verdict-title"),
                    verdict_badge(reliance.get("verdict")),
                    html.Span(f"score {fmt(reliance.get('score'), 2)}", className="ms-verdict-score",
                              id="ablate-reliance-score"),
                    html.Span(f"95% CI [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]", className="ms-verdict-ci"),
                ],
                className="ms-verdict-head",
            ),
            html.P("Every memory read resample-ablated at once (the checkpoint's report): the share of the gap "
                   "between the clean metric and chance that is lost.", className="ms-note"),
            html.Ul([html.Li(line) for line in reliance.get("evidence") or []], className="ms-evidence"),
        ],
        className="ms-verdict",
        **{"data-verdict": reliance.get("verdict") or ""},
    )


def summary_table(a: Mapping[str, Any]) -> html.Table:
    name = a.get("metric_name") or "metric"
    rows = [
        ("ablation", a.get("label") or ", ".join(get_path(a, "spec.sites", default=[]))),
        (f"{name} clean → ablated", f"{fmt(a.get('metric_clean'), 4)} → {fmt(a.get('metric'), 4)} "
                                    f"({'+' if (a.get('metric_delta') or 0) >= 0 else ''}{fmt(a.get('metric_delta'), 4)})"),
        ("loss clean → ablated", f"{fmt(a.get('loss_clean'), 4)} → {fmt(a.get('loss'), 4)}"),
        ("output change", f"mean |Δp| {fmt(a.get('prob_change'), 4)} · KL {fmt(a.get('kl'), 4)} · "
                          f"{fmt(100 * a['flip_rate'], 1) if a.get('flip_rate') is not None else 'n/a'}% flipped"),
    ]
    return html.Table(html.Tbody([html.Tr([html.Th(k), html.Td(v)]) for k, v in rows]), className="ms-kv")


def result_view(results: Mapping[str, Any], body: Mapping[str, Any] | None) -> dict:
    """Figures and panels from the finished jobs' results."""
    data = results.get("ablation")
    a = data[0] if isinstance(data, list) and data else data if isinstance(data, Mapping) else {}
    report = results.get("report") or {}
    reliance = report.get("reliance") if isinstance(report, Mapping) else None
    steps = get_path(body or {}, "specs.0.steps")
    rows = [{"t": t, "metric_clean": c, "metric_ablated": m, "prob_change": dp, "flip_rate": f, "kl": k}
            for t, (c, m, dp, f, k) in enumerate(zip(*[a.get(key) or [] for key in (
                "metric_clean_per_step", "metric_per_step", "prob_change_per_step", "flip_rate_per_step",
                "kl_per_step")]))]
    return {
        "metric": metric_figure(a, steps),
        "change": change_figure(a),
        "summary": summary_table(a) if a else None,
        "verdict": verdict_panel(reliance, None if reliance else "no reliance verdict in the report"),
        "export": export_payload("ablation", {"ablation": a, "reliance": reliance},
                                 rows or [flatten({"ablation": a, "reliance": reliance})]),
    }


def load_sites(api: ApiClient, checkpoint_id: str | None, current: Sequence[str] | None) -> tuple:
    """Site options for a checkpoint and the selection: the current one where it still
    fits this model, else every memory read."""
    if not checkpoint_id:
        return [], [], None
    try:
        specs = api.sites(checkpoint_id)
    except ApiError as exc:
        return [], [], error_box(str(exc))
    names = {s["name"] for s in specs}
    keep = [s for s in (current or []) if s in names]
    return site_options(specs), keep or sites_of_kind(specs, ("read",)), None


def register(app, context) -> None:
    @app.callback(
        Output("ablate-checkpoint", "options"),
        Output("ablate-boot-error", "children"),
        Input("ablate-boot", "data"),
        State("token-input", "value"),
    )
    def _boot(boot, token):
        with context.client(token) as api:
            return checkpoint_boot(api, boot)

    @app.callback(
        Output("ablate-sites", "options"),
        Output("ablate-sites", "value"),
        Output("ablate-error", "children", allow_duplicate=True),
        Input("ablate-checkpoint", "value"),
        State("ablate-sites", "value"),
        State("token-input", "value"),
        prevent_initial_call="initial_duplicate",
    )
    def _sites(checkpoint_id, current, token):
        with context.client(token) as api:
            return load_sites(api, checkpoint_id, current)

    @app.callback(
        Output("ablate-jobs", "data"),
        Output("ablate-poll", "disabled"),
        Output("ablate-progress", "children"),
        Output("ablate-error", "children"),
        Output("ablate-metric", "figure"),
        Output("ablate-change", "figure"),
        Output("ablate-summary", "children"),
        Output("ablate-verdict", "children"),
        Output({"type": "result", "name": "ablate"}, "data"),
        Input("ablate-run", "n_clicks"),
        Input("ablate-poll", "n_intervals"),
        State("ablate-checkpoint", "value"),
        State("ablate-sites", "value"),
        State("ablate-mode", "value"),
        State("ablate-steps", "value"),
        State("ablate-samples", "value"),
        State("ablate-seed", "value"),
        State("ablate-jobs", "data"),
        State("token-input", "value"),
        prevent_initial_call=True,
    )
    def _run(_clicks, _tick, checkpoint_id, sites, mode, steps, samples, seed, jobs, token):
        with context.client(token) as api:
            out = run_step(api, ctx.triggered_id, checkpoint_id, sites, mode, steps, samples, seed, jobs)
        return (out["jobs"], out["poll_disabled"], out["progress"], error_box(out["error"]), out["metric"],
                out["change"], out["summary"], out["verdict"], out["export"])

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "syncUrl"),
        Output("ablate-url-sink", "children"),
        Input("ablate-checkpoint", "value"),
        Input("ablate-sites", "value"),
        Input("ablate-mode", "value"),
        Input("ablate-steps", "value"),
        Input("ablate-samples", "value"),
        Input("ablate-seed", "value"),
        State("ablate-url-keys", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "rememberCheckpoint"),
        Output("current-checkpoint", "data", allow_duplicate=True),
        Input("ablate-checkpoint", "value"),
        prevent_initial_call="initial_duplicate",
    )


def run_step(api: ApiClient, trigger: Any, checkpoint_id: str | None, sites, mode, steps, samples, seed,
             jobs: Mapping | None) -> dict:
    """Start (on "Run") or poll the ablation and report jobs; draw the results when done."""
    out = {"metric": no_update, "change": no_update, "summary": no_update, "verdict": no_update, "export": no_update}
    requests = None
    body = None
    if trigger == "ablate-run":
        if not checkpoint_id:
            return {**out, "jobs": None, "poll_disabled": True, "progress": no_update,
                    "error": "choose a checkpoint first"}
        try:
            body = ablation_body(sites, mode, steps, samples, seed)
        except ValueError as exc:
            return {**out, "jobs": jobs, "poll_disabled": True, "progress": no_update, "error": str(exc)}
        requests = {"ablation": (checkpoint_id, "ablations", body), "report": (checkpoint_id, "report", {})}
        # clear the previous result while the new one runs
        out.update(metric=empty_figure("running..."), change=empty_figure("running..."), summary=None, verdict=None)
    state = dict(jobs or {})
    step = run_or_poll(api, trigger, "ablate-run", requests, state.get("jobs"))
    request = body if body is not None else state.get("request")
    if step["results"] is not None:
        out.update(result_view(step["results"], request))
    return {**out, "jobs": {"jobs": step["jobs"], "request": request}, "poll_disabled": step["poll_disabled"],
            "progress": step["progress"], "error": step["error"]}
