"""Gradients: how much training signal reaches the memory path versus the bypass.

Per component group, the norm of d loss / d parameters; per timestep, the gradient
reaching the memory reads versus the bypass; and, for a series of checkpoints of one
run, the same over training steps (one gradients job per checkpoint).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from ..api import ApiClient, ApiError
from ..components import axis, base_layout, empty_figure, error_box, export_buttons, export_payload, figure, fmt, graph_card
from .common import checkpoint_boot, checkpoint_dropdown, field, job_controls, run_or_poll, split_list, to_int

PATH = "gradients"
TITLE = "Gradients"
URL_KEYS = ["checkpoint", "samples", "seed"]
MAX_SERIES = 24


def layout(params: Mapping[str, str], context=None) -> html.Div:
    return html.Div(
        [
            dcc.Store(id="gradients-boot", data=dict(params)),
            dcc.Store(id="gradients-url-keys", data=URL_KEYS),
            html.Span(id="gradients-url-sink", hidden=True),
            html.Div(
                [
                    field("Checkpoints", checkpoint_dropdown("gradients-checkpoint", split_list(params.get("checkpoint")),
                                                             multi=True, placeholder="one checkpoint, or a training series"),
                          grow=True),
                    field("Sequences", dcc.Input(id="gradients-samples", type="number", min=1, max=512, step=1,
                                                 value=params.get("samples") or 16, className="ms-input ms-input-num")),
                    field("Seed", dcc.Input(id="gradients-seed", type="number", min=0, step=1,
                                            value=params.get("seed") or 0, className="ms-input ms-input-num")),
                    html.Button("Measure", id="gradients-run", className="ms-btn ms-btn-primary"),
                    export_buttons("gradients"),
                ],
                className="ms-controls",
            ),
            *job_controls("gradients"),
            html.Div(id="gradients-boot-error"),
            html.Div(id="gradients-error"),
            html.Div(id="gradients-summary", className="ms-status"),
            html.Div(
                [
                    graph_card("gradients-groups", "Gradient norm per component group", filename="gradient-groups",
                               note="L2 norm of d loss / d parameters of each group (memory path, controller, output)."),
                    graph_card("gradients-steps", "Per timestep: memory reads vs bypass", filename="gradient-per-step",
                               note="Norm of d loss / d (site value at t): how much signal reaches what memory "
                                    "returned, and what went around it."),
                ],
                className="ms-grid-2",
            ),
            graph_card("gradients-series", "Across the series", filename="gradient-series", hidden=True,
                       note="Ratio of the gradient reaching memory reads to that reaching the bypass, over training."),
        ],
        className="ms-page",
    )


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


def gradients_body(samples: Any, seed: Any) -> dict:
    return {"samples": to_int(samples, default=16, minimum=1, maximum=512, name="sequences"),
            "seed": to_int(seed, default=0, minimum=0, name="seed")}


def ordered(checkpoints: Sequence[Mapping[str, Any]], ids: Sequence[str]) -> list[Mapping[str, Any]]:
    """The chosen checkpoints in training order (step, then name)."""
    by_id = {c["id"]: c for c in checkpoints}
    chosen = [by_id[i] for i in ids if i in by_id]
    return sorted(chosen, key=lambda c: (c.get("step") or 0, c.get("name") or ""))


def result_view(api: ApiClient, ids: Sequence[str], results: Mapping[str, Any]) -> dict:
    try:
        ckpts = ordered(api.checkpoints(), ids)
    except ApiError:
        ckpts = [{"id": i, "name": i} for i in ids]
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
        "show_series": len(points) > 1,
        "summary": summary,
        "export": export_payload("gradients", {p["checkpoint_id"]: r for p, (_, r) in zip(points, labelled)}, rows),
    }


def run_step(api: ApiClient, trigger: Any, ids: Sequence[str] | None, samples, seed, state: Mapping | None) -> dict:
    out = {"groups": no_update, "steps": no_update, "series": no_update, "show_series": no_update,
           "summary": no_update, "export": no_update}
    state = dict(state or {})
    requests = None
    if trigger == "gradients-run":
        ids = list(ids or [])
        if not ids:
            return {**out, "jobs": None, "poll_disabled": True, "progress": no_update,
                    "error": "choose one checkpoint, or several of one training run"}
        if len(ids) > MAX_SERIES:
            return {**out, "jobs": state, "poll_disabled": True, "progress": no_update,
                    "error": f"at most {MAX_SERIES} checkpoints at once"}
        try:
            body = gradients_body(samples, seed)
        except ValueError as exc:
            return {**out, "jobs": state, "poll_disabled": True, "progress": no_update, "error": str(exc)}
        requests = {cid: (cid, "gradients", body) for cid in ids}
        state = {"ids": ids}
        out.update(groups=empty_figure("running..."), steps=empty_figure("running..."), summary="")
    step = run_or_poll(api, trigger, "gradients-run", requests, state.get("jobs"))
    if step["results"] is not None:
        out.update(result_view(api, state.get("ids") or list(step["results"]), step["results"]))
    return {**out, "jobs": {"jobs": step["jobs"], "ids": state.get("ids")}, "poll_disabled": step["poll_disabled"],
            "progress": step["progress"], "error": step["error"]}


def register(app, context) -> None:
    @app.callback(
        Output("gradients-checkpoint", "options"),
        Output("gradients-boot-error", "children"),
        Input("gradients-boot", "data"),
        State("token-input", "value"),
    )
    def _boot(boot, token):
        with context.client(token) as api:
            return checkpoint_boot(api, boot, multi=True)

    @app.callback(
        Output("gradients-jobs", "data"),
        Output("gradients-poll", "disabled"),
        Output("gradients-progress", "children"),
        Output("gradients-error", "children"),
        Output("gradients-groups", "figure"),
        Output("gradients-steps", "figure"),
        Output("gradients-series", "figure"),
        Output("gradients-series-card", "hidden"),
        Output("gradients-summary", "children"),
        Output({"type": "result", "name": "gradients"}, "data"),
        Input("gradients-run", "n_clicks"),
        Input("gradients-poll", "n_intervals"),
        State("gradients-checkpoint", "value"),
        State("gradients-samples", "value"),
        State("gradients-seed", "value"),
        State("gradients-jobs", "data"),
        State("token-input", "value"),
        prevent_initial_call=True,
    )
    def _run(_clicks, _tick, ids, samples, seed, state, token):
        with context.client(token) as api:
            out = run_step(api, ctx.triggered_id, ids, samples, seed, state)
        hidden = no_update if out["show_series"] is no_update else not out["show_series"]
        return (out["jobs"], out["poll_disabled"], out["progress"], error_box(out["error"]), out["groups"],
                out["steps"], out["series"], hidden, out["summary"], out["export"])

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "syncUrl"),
        Output("gradients-url-sink", "children"),
        Input("gradients-checkpoint", "value"),
        Input("gradients-samples", "value"),
        Input("gradients-seed", "value"),
        State("gradients-url-keys", "data"),
        prevent_initial_call=True,
    )
