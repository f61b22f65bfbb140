"""Explore: where the network reads and writes, step by step.

One trace request fills a `dcc.Store` (the "bundle": per-step weights, the memory
matrix, attention rows) and draws the whole-sequence figures; the timestep slider, the
play button and clicks on heatmap columns then redraw the selected-timestep panels in
the browser (assets/mnemoscope.js `scrub`), with no server round trip.

For a stacked model (sequence and Hugging Face models: sites `layers.{i}.*`) a layer
and a head picker choose what is traced and drawn: the chosen layer's memory heads,
attention patterns and implicit attention, one head or all of them as small multiples.
The checkpoint's latest report adds the verdict's warnings above the figures.

This module holds the layout and the callbacks; the trace is shaped in
`explore_data` and drawn in `explore_figures`.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from ..api import ApiClient, ApiError
from ..components import (DIFFUSE_ABOVE, SHARP_BELOW, empty_figure, error_box, estimate_text, export_buttons,
                          export_payload, graph_card, warnings_row)
from ..explore_data import (
    build_bundle,
    bundle_text,
    entropy_series,
    figure_points,
    layer_choices,
    matrix_points,
    matrix_steps,
    sites_to_record,
    summary_line,
    trace_json,
    trace_rows,
    zoom_window,
)
from ..explore_figures import attention_figure, entropy_figure, heads_figure, strips_figure
from .common import (
    TASK_PARAM,
    NumberField,
    checkpoint_boot,
    checkpoint_title,
    checkpoint_dropdown,
    field,
    length_params,
    number_bounds,
    to_int,
)

PATH = "explore"
TITLE = "Explore"
URL_KEYS = ["checkpoint", "length", "seed", "layer", "head", "t"]
ALL_HEADS = "all"
LENGTH = NumberField("explore-length", "trace", TASK_PARAM, "length")
SEED = NumberField("explore-seed", "trace", "seed", "seed")

# graphs whose x axis is time get the selected-timestep cursor (assets/mnemoscope.js
# draws it over them); the step graphs are redrawn in the browser for each timestep
TIME_GRAPHS = ["explore-strips", "explore-read", "explore-write", "explore-slots", "explore-entropy"]
STEP_GRAPHS = ["explore-weights-t", "explore-matrix-t", "explore-attention-t"]
# zooming into a range of timesteps on these fetches that window (attention: its query axis)
ZOOM_GRAPHS = ["explore-read", "explore-write", "explore-strips", "explore-entropy", "explore-attention"]


def window_from_zoom(graph: str, relayout: Mapping[str, Any] | None, span: Mapping[str, Any] | None
                     ) -> tuple[int, int] | None | bool:
    """The steps to trace after a relayout of `graph`, given the steps drawn now (`span`:
    {"T", "window"}): a window (t0, t1), None for the whole sequence, False when it was no
    zoom on the time axis or changes nothing (nothing to fetch)."""
    if not span or not span.get("T"):
        return False
    window = zoom_window(relayout, span["T"], "yaxis" if graph == "explore-attention" else "xaxis")
    if window is not False and list(window or (0, span["T"])) == list(span.get("window") or []):
        return False
    return window


def load_matrix(api: ApiClient, bundle: Mapping[str, Any] | None) -> dict | None:
    """Second request of a trace: the same sample again, recording only the matrix (of
    the chosen head, for a linear-memory state)."""
    if not bundle or not bundle.get("matrix_site") or not bundle.get("request"):
        return None
    req = bundle["request"]
    # a long trace's matrix comes max-pooled into as many time bins as fit the browser
    points = matrix_points(bundle.get("matrix_values") or 1)
    long = (req.get("window") or bundle.get("window") or [0, bundle.get("T") or 0])
    reduce = {"max_points": points} if long[1] - long[0] > points else {}
    window = {"window": tuple(req["window"])} if req.get("window") else {}
    try:
        trace = api.trace(req["checkpoint"], params=req.get("params") or None, seed=req.get("seed", 0), samples=1,
                          sites=[bundle["matrix_site"]], **reduce, **window)
    except ApiError as exc:
        return {"error": str(exc)}
    return matrix_steps(trace, bundle["matrix_site"], bundle.get("head") or 0) or {
        "error": "the memory matrix is too large to draw at this length: zoom into fewer steps"}


def choose_layer(layers: list[dict], layer: Any, head: Any) -> tuple[int | None, int | None]:
    """(layer, head) as drawn: the asked-for layer where the model has it, else its first
    layer with something to draw; the asked-for head where that layer has it, else all
    (None). A model without layers: (None, None)."""
    if not layers:
        return None, None
    by_number = {entry["layer"]: entry for entry in layers}
    asked = to_int(layer, name="layer") if str(layer or "").strip().isdigit() else None
    entry = by_number.get(asked) or layers[0]
    head_v = to_int(head, name="head") if str(head or "").strip().isdigit() else None
    if head_v is not None and head_v >= entry["heads"]:
        head_v = None
    return entry["layer"], head_v


def head_options(layers: list[dict], layer: int | None) -> list[dict]:
    heads = next((e["heads"] for e in layers if e["layer"] == layer), 1)
    return [{"label": f"all {heads} heads" if heads > 1 else "all", "value": ALL_HEADS},
            *[{"label": f"head {h}", "value": str(h)} for h in range(heads)]]


def latest_report(api: ApiClient, checkpoint_id: str | None) -> Mapping | None:
    """The checkpoint's latest report result (None without one)."""
    if not checkpoint_id:
        return None
    try:
        job_id = api.checkpoint(checkpoint_id).get("report_job_id")
        result = api.job(job_id).get("result") if job_id else None
    except ApiError:
        return None
    data = result.get("data", result) if isinstance(result, Mapping) else None
    return data if isinstance(data, Mapping) else None


def report_warnings(api: ApiClient, checkpoint_id: str | None) -> Any:
    """The verdict's warnings from the checkpoint's latest report (nothing without one)."""
    return warnings_row(latest_report(api, checkpoint_id), "explore-warnings-list")


def layer_necessity_table(report: Mapping | None) -> html.Table | None:
    """Per-layer necessity from a report (`reliance.layers`: each layer's memory or attention
    output mean-ablated on its own), the layers the task needs marked; None without per-layer rows."""
    rows = ((report or {}).get("reliance") or {}).get("layers") or []
    if not rows:
        return None
    head = html.Tr([html.Th("layer"), html.Th("kind"), html.Th("necessity alone (gap lost, 95% CI)"),
                    html.Th("needed")])
    body = [html.Tr([html.Td(str(r.get("layer"))),
                     html.Td(f"{r.get('kind')} ({'memory' if r.get('role') == 'memory' else 'not memory'})"),
                     html.Td(estimate_text(r.get("necessity"))), html.Td("yes" if r.get("needed") else "no")])
            for r in rows]
    return html.Table([html.Caption("Per-layer necessity (the latest report)"), html.Thead(head), html.Tbody(body)],
                      className="ms-table ms-table-compact", id="explore-layer-necessity")


def report_notes(api: ApiClient, checkpoint_id: str | None) -> list:
    """What the latest report adds above the figures: its warnings and per-layer necessity."""
    report = latest_report(api, checkpoint_id)
    return [part for part in (warnings_row(report, "explore-warnings-list"), layer_necessity_table(report))
            if part is not None]


# -- the callback's work --------------------------------------------------------------------

def load_view(api: ApiClient, checkpoint_id: str | None, length: Any, seed: Any, t: Any = None,
              layer: Any = None, head: Any = None, window: tuple[int, int] | None = None) -> dict:
    """Everything the page shows for one (checkpoint, length, seed, layer, head): figures,
    the bundle for scrubbing, slider settings, the layer and head pickers, which optional
    cards to show, and any error. The trace comes at the figures' resolution (max-pooled
    server-side beyond `figure_points` steps); `window` = (t0, t1) zooms into those steps."""
    view = _blank_view()
    if not checkpoint_id:
        view["status"] = "Choose a checkpoint to trace."
        return view
    try:
        kinds = api.kinds()
        length_v = LENGTH.parse(kinds, length)
        seed_v = SEED.parse(kinds, seed)
        t_v = to_int(t, minimum=0, name="t")
        ckpt = api.checkpoint(checkpoint_id)
        specs = api.sites(checkpoint_id)
        params = length_params(ckpt.get("task"), length_v)
        layers = layer_choices(specs)
        layer_v, head_v = choose_layer(layers, layer, head)
        trace = api.trace(checkpoint_id, params=params, seed=seed_v, samples=1, sites=sites_to_record(specs, layer_v),
                          max_points=figure_points(specs, layer_v), **({"window": window} if window else {}))
    except (ValueError, ApiError) as exc:
        view["error"] = str(exc)
        return view
    bundle = build_bundle(trace, specs, t_v, layer_v, head_v)
    bundle["request"] = {"checkpoint": checkpoint_id, "params": params, "seed": seed_v,
                         **({"window": list(window)} if window else {})}
    bundle["matrix_values"] = _step_values(specs, bundle["matrix_site"])
    T = bundle["T"]
    t0, t1 = bundle["window"]
    edges = bundle["edges"] or list(range(t0, t1 + 1))  # the figures' time axis: bins, or steps
    ent = entropy_series(trace, specs, layer_v, head_v)
    view.update(
        bundle=bundle,
        strips=strips_figure(trace),
        read=heads_figure(bundle["read"], y_title="slot", empty="this model has no read weightings over slots",
                          edges=edges),
        write=heads_figure(bundle["write"], y_title="slot", empty="this model has no write weightings over slots",
                           edges=edges),
        slots=heads_figure(bundle["slots"], y_title="slot", empty="", edges=edges),
        attention=attention_figure(bundle["attention"], edges, bundle["key_bin"]),
        entropy=entropy_figure(ent, T, edges),
        slider_min=t0,
        slider_max=max(t1 - 1, t0),
        marks=_marks(t0, t1),
        t=bundle["t"],
        show_slots=bool(bundle["slots"]),
        show_attention=bool(bundle["attention"]),
        show_matrix=bundle["matrix_site"] is not None,
        show_rw=bool(bundle["read"] or bundle["write"]),
        show_weights=bool(bundle["read"] or bundle["write"] or bundle["slots"]),
        status=f"{checkpoint_title(ckpt)}: " + summary_line(trace, T),
        export=export_payload(f"trace-{checkpoint_id}-seed{seed_v}", trace_json(trace, bundle, ent),
                              trace_rows(trace, ent, bundle)),
        layer_options=[{"label": e["label"], "value": str(e["layer"])} for e in layers],
        layer=None if layer_v is None else str(layer_v),
        head_options=head_options(layers, layer_v) if layers else [],
        head=None if not layers else ALL_HEADS if head_v is None else str(head_v),  # no picker, no URL key
        show_layers=bool(layers),
    )
    if layers:
        chosen = next(e for e in layers if e["layer"] == layer_v)
        view["status"] += f" · {chosen['label']} of {len(layers)} drawn layers"
    if bundle["hidden_heads"]:
        view["status"] += f" · {bundle['hidden_heads']} more heads not drawn"
    if window:
        view["status"] += f" · steps {t0}-{t1 - 1} (double-click a figure for all {T})"
    if bundle["edges"]:
        view["status"] += (f" · {T} steps drawn as {len(edges) - 1} columns of {edges[1] - edges[0]} (each the "
                           "max of its steps); zoom into a range of steps to see each one")
    return view


def _step_values(specs, site: str | None) -> int:
    """Values per timestep of a site (its axes multiplied), 0 without one."""
    spec = next((s for s in specs if s.get("name") == site), None) if site else None
    sizes = [n for n in (spec or {}).get("shape") or [] if isinstance(n, int)]
    return math.prod(sizes) if spec else 0


def _blank_view() -> dict:
    blank = empty_figure()
    return {"bundle": None, "strips": blank, "read": blank, "write": blank, "slots": blank, "attention": blank,
            "entropy": blank, "slider_min": 0, "slider_max": 0, "marks": {}, "t": 0, "show_slots": False, "show_attention": False,
            "show_matrix": False, "show_weights": False, "show_rw": False, "status": "", "error": None, "export": None,
            "layer_options": [], "layer": None, "head_options": [], "head": None, "show_layers": False}


def _marks(t0: int, t1: int | None = None) -> dict:
    """About ten labelled steps over [t0, t1) (one argument: [0, T))."""
    if t1 is None:
        t0, t1 = 0, t0
    if t1 - t0 <= 1:
        return {t0: str(t0)}
    step = max(1, round((t1 - t0) / 10))
    return {i: str(i) for i in range(t0, t1, step)}


def boot_step(api: ApiClient, boot: Mapping | None) -> tuple:
    """On page load: the checkpoint options, and the bounds of length and seed. The seed's
    default is its placeholder, not its value: a value set here would trace again."""
    options, error = checkpoint_boot(api, boot)
    bounds, limits_error = number_bounds(api, (LENGTH, SEED), (None, None))
    length_min, length_max, _, seed_min, seed_max, seed_default = bounds
    return (options, error or error_box(limits_error), length_min, length_max, seed_min, seed_max,
            "" if seed_default is None else str(seed_default))


# -- layout ---------------------------------------------------------------------------------

def layout(params: Mapping[str, str], context=None) -> html.Div:
    ckpt = params.get("checkpoint")
    return html.Div(
        [
            dcc.Store(id="explore-boot", data=dict(params)),
            dcc.Store(id="explore-bundle"),
            dcc.Store(id="explore-span"),  # {"T", "window"}: the steps drawn, for a zoom to compare with
            dcc.Store(id="explore-zoom"),  # {"window": [t0, t1] or None}: the steps a zoom asks for
            dcc.Store(id="explore-deferred"),
            dcc.Store(id="explore-matrix"),
            dcc.Store(id="explore-url-keys", data=URL_KEYS),
            html.Span(id="explore-url-sink", hidden=True),
            html.Div(
                [
                    field("Checkpoint", checkpoint_dropdown("explore-checkpoint", ckpt), grow=True),
                    field("Length", LENGTH.control(params.get("length") or None, placeholder="default",
                                                   debounce=True)),
                    field("Seed", SEED.control(params.get("seed"), debounce=True)),
                    html.Div(
                        [field("Layer", dcc.Dropdown(id="explore-layer", value=params.get("layer"),
                                                     options=[{"label": f"layer {params['layer']}",
                                                               "value": params["layer"]}] if params.get("layer") else [],
                                                     clearable=False, className="ms-dropdown ms-dropdown-narrow")),
                         field("Head", dcc.Dropdown(id="explore-head", value=params.get("head"),
                                                    options=[{"label": "all", "value": ALL_HEADS}]
                                                    + ([{"label": f"head {params['head']}", "value": params["head"]}]
                                                       if params.get("head") and params["head"] != ALL_HEADS else []),
                                                    clearable=False, className="ms-dropdown ms-dropdown-narrow"))],
                        id="explore-layer-fields", className="ms-inline-fields", hidden=True,
                        title="a stacked model is drawn one layer at a time"),
                    html.Button("Trace", id="explore-run", className="ms-btn ms-btn-primary"),
                    export_buttons("explore"),
                ],
                className="ms-controls",
            ),
            html.Div(id="explore-boot-error"),
            html.Div(id="explore-error"),
            html.Div(id="explore-warnings"),
            dcc.Loading(html.Div(id="explore-status", className="ms-status"), type="dot", delay_show=300),
            graph_card("explore-strips", "Input, target and output", filename="explore-strips",
                       note="Rows are channels (bits: white = 1, black = 0; outputs: the probability of a 1). The "
                            "bottom bars are the task metric of each scored position; grey columns are steps with "
                            "nothing scored (their outputs count for nothing)."),
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
                            "(the weight each earlier input has on the output at t), of the chosen layer: one "
                            "panel per head."),
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
        Output("explore-length", "min"),
        Output("explore-length", "max"),
        Output("explore-seed", "min"),
        Output("explore-seed", "max"),
        Output("explore-seed", "placeholder"),
        Input("explore-boot", "data"),
        State("token-input", "value"),
    )
    def _boot(boot, token):
        with context.client(token) as api:
            return boot_step(api, boot)

    @app.callback(
        Output("explore-bundle", "data"),
        Output("explore-span", "data"),
        Output("explore-read", "figure"),
        Output("explore-write", "figure"),
        Output("explore-deferred", "data"),
        Output("explore-t", "min"),
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
        Output("explore-layer", "options"),
        Output("explore-layer", "value"),
        Output("explore-head", "options"),
        Output("explore-head", "value"),
        Output("explore-layer-fields", "hidden"),
        Input("explore-checkpoint", "value"),
        Input("explore-length", "value"),
        Input("explore-seed", "value"),
        Input("explore-run", "n_clicks"),
        Input("explore-layer", "value"),
        Input("explore-head", "value"),
        Input("explore-zoom", "data"),
        State("explore-boot", "data"),
        State("token-input", "value"),
    )
    def _trace(checkpoint_id, length, seed, _clicks, layer, head, zoom, boot, token):
        # a zoom into a range of steps: that window, at full resolution; anything else: all steps
        window = tuple(zoom["window"]) if ctx.triggered_id == "explore-zoom" and (zoom or {}).get("window") else None
        t = None
        first_load = ctx.triggered_id in (None, "explore-checkpoint") and checkpoint_id == (boot or {}).get("checkpoint")
        # the first trace of a page load keeps the URL's timestep
        if boot and boot.get("t") and first_load:
            t = boot.get("t")
        if ctx.triggered_id == "explore-checkpoint" and not first_load:
            layer = head = None  # another model: its own first layer, all heads
        elif ctx.triggered_id == "explore-layer":
            head = None  # another layer: all its heads
        with context.client(token) as api:
            v = load_view(api, checkpoint_id, length, seed, t, layer, head, window)
        deferred = {"figures": [v["strips"], v["slots"], v["attention"], v["entropy"]]}
        span = {"T": v["bundle"]["T"], "window": v["bundle"]["window"]} if v["bundle"] else None
        return (bundle_text(v["bundle"]), span, v["read"], v["write"], deferred,
                v["slider_min"], v["slider_max"], v["marks"], v["t"], not v["show_slots"], not v["show_attention"],
                not v["show_attention"], not v["show_matrix"], not v["show_weights"], not v["show_rw"], v["status"],
                error_box(v["error"]), v["export"], v["layer_options"], v["layer"], v["head_options"], v["head"],
                not v["show_layers"])

    # Zooms reach the trace through their own store: a relayout that is no zoom (every graph
    # sends one when it is first sized) must not start the trace callback again, or Dash
    # would drop the answer of the first trace still on its way
    @app.callback(
        Output("explore-zoom", "data"),
        *[Input(g, "relayoutData") for g in ZOOM_GRAPHS],
        State("explore-span", "data"),
        prevent_initial_call=True,
    )
    def _zoom(*args):
        *relayouts, span = args
        window = window_from_zoom(ctx.triggered_id, relayouts[ZOOM_GRAPHS.index(ctx.triggered_id)], span)
        if window is False:
            raise PreventUpdate
        return {"window": list(window) if window else None}

    @app.callback(
        Output("explore-warnings", "children"),
        Input("explore-checkpoint", "value"),
        State("token-input", "value"),
    )
    def _warnings(checkpoint_id, token):
        with context.client(token) as api:
            return report_notes(api, checkpoint_id)

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
        Input("explore-layer", "value"),
        Input("explore-head", "value"),
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
