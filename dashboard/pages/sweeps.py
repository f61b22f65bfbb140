"""Sweeps: the reliance curves of the sweeps `mnemoscope sweep run` wrote under the server's
data directory, and a table of their points, each linked to its checkpoint.

The figures come ready from GET /api/sweeps/{id} (the server derives them from the results
table); this page only restyles them. A point's checkpoint opens in Explore when the same
bytes are in the server's store (upload the file, or drop it on the Checkpoints page);
otherwise its link downloads the file from the sweep's folder.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence
from urllib.parse import quote

from dash import ClientsideFunction, Input, Output, State, dcc, html, no_update

from ..api import ApiError
from ..components import base_layout, error_box, fmt, graph_card, info_box, verdict_badge

PATH = "sweeps"
TITLE = "Sweeps"
URL_KEYS = ["sweep", "measure"]
MEASURES = {"necessity": "Memory necessity", "sufficiency": "Memory sufficiency", "metric": "Task metric"}
DEFAULT_MEASURE = "necessity"


def layout(params: Mapping[str, str], context=None) -> html.Div:
    return html.Div(
        [
            dcc.Store(id="sweeps-boot", data=dict(params)),
            dcc.Store(id="sweeps-url-keys", data=URL_KEYS),
            html.Div(id="sweeps-url-sink", hidden=True),
            html.H2("Sweeps", className="ms-h2"),
            html.P(["Reliance over a knob, every seed a point, the line their mean. Run one with ",
                    html.Code("mnemoscope sweep run FILE"), " (it writes under this server's data directory)."],
                   className="ms-note"),
            html.Div(
                [
                    html.Label("Sweep", htmlFor="sweeps-select", className="ms-label"),
                    dcc.Dropdown(id="sweeps-select", options=[], value=params.get("sweep"), clearable=False,
                                 placeholder="choose a sweep", className="ms-dropdown"),
                    html.Label("Measure", htmlFor="sweeps-measure", className="ms-label"),
                    dcc.RadioItems(id="sweeps-measure", options=[{"label": v, "value": k} for k, v in MEASURES.items()],
                                   value=params.get("measure") if params.get("measure") in MEASURES else DEFAULT_MEASURE,
                                   inline=True, className="ms-radio"),
                ],
                className="ms-controls",
            ),
            html.Div(id="sweeps-list-error"),
            html.Div(id="sweeps-error"),
            html.Div(id="sweeps-summary"),
            graph_card("sweeps-figure", "Reliance against the knob", filename="sweep"),
            html.Div(id="sweeps-table", className="ms-table-wrap"),
        ],
        className="ms-page",
    )


# -- the API (read-only routes, reached through the client's one request method) --------------

def fetch_sweeps(api) -> list[dict]:
    return list(api.request("GET", "/api/sweeps") or [])


def fetch_sweep(api, sweep_id: str) -> dict:
    return api.request("GET", f"/api/sweeps/{quote(str(sweep_id), safe='')}")


# -- steps (what the callbacks do; tested with a fake client) -----------------------------------

def list_step(api, wanted: str | None) -> dict:
    """The dropdown's options and value (the URL's sweep if there is one, else the first)."""
    try:
        sweeps = fetch_sweeps(api)
    except ApiError as exc:
        return {"options": [], "value": None, "error": str(exc)}
    options = [{"label": f"{s['name']} ({s['points_done']}/{s['points_total']} points)", "value": s["id"]}
               for s in sweeps]
    ids = [s["id"] for s in sweeps]
    value = wanted if wanted in ids else (ids[0] if ids else None)
    error = None
    if wanted and wanted not in ids:
        error = f"there is no sweep {wanted!r} on this server" + (f"; showing {value}" if value else "")
    return {"options": options, "value": value, "error": error}


def view_step(api, context, sweep_id: str | None, measure: str | None) -> dict:
    """Summary, figure and point table of one sweep."""
    measure = measure if measure in MEASURES else DEFAULT_MEASURE
    if not sweep_id:
        return {"summary": info_box("No sweeps here yet: run `mnemoscope sweep run FILE` with this server's "
                                    "data directory (--data-dir), then reload."),
                "figure": no_update, "table": None, "error": None}
    try:
        sweep = fetch_sweep(api, sweep_id)
    except ApiError as exc:
        return {"summary": None, "figure": no_update, "table": None, "error": str(exc)}
    figures = sweep.get("figures") or {}
    spec = figures.get(measure)
    if spec is None:
        figure = {"data": [], "layout": base_layout(height=200, annotations=[{
            "text": f"no {MEASURES[measure].lower()} in this sweep's results", "showarrow": False,
            "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}])}
    else:
        figure = {"data": spec.get("data", []), "layout": base_layout(height=440, **spec.get("layout", {}))}
    return {"summary": summary_view(sweep), "figure": figure, "table": points_table(sweep, context), "error": None}


def summary_view(sweep: Mapping[str, Any]) -> html.Div:
    knobs = ", ".join(sweep.get("knobs") or []) or "none"
    return html.Div(
        [html.P(sweep.get("description") or "", className="ms-note"),
         html.P(f"{sweep.get('points_done')} of {sweep.get('points_total')} points; knobs: {knobs}; "
                f"seeds {sweep.get('seeds')}; mnemoscope {sweep.get('version') or '?'}; updated {sweep.get('updated_at')}",
                className="ms-dim")],
        className="ms-sweep-summary",
    )


def checkpoint_links(sweep_id: str, row: Mapping[str, Any], context) -> list:
    links = []
    if row.get("checkpoint_id"):
        links.append(dcc.Link("Explore", href=context.href("explore", {"checkpoint": row["checkpoint_id"]}),
                              className="ms-btn ms-btn-small"))
    if row.get("checkpoint"):
        filename = str(row["checkpoint"]).rsplit("/", 1)[-1]
        api_path = context.api_path.rstrip("/")
        links.append(html.A("Download", href=f"{api_path}/sweeps/{quote(sweep_id, safe='')}/checkpoints/"
                                             f"{quote(filename, safe='')}",
                            className="ms-btn ms-btn-small", download=f"{sweep_id}-{filename}",
                            title="the checkpoint file; upload it on Checkpoints to analyse it here"))
    return links


def points_table(sweep: Mapping[str, Any], context) -> Any:
    rows: Sequence[Mapping[str, Any]] = sweep.get("rows") or []
    if not rows:
        return info_box("No point has finished yet.")
    knobs = list(sweep.get("knobs") or [])
    metric = next((r.get("metric_name") for r in rows if r.get("metric_name")), "metric")
    head = html.Thead(html.Tr([html.Th(k.rsplit(".", 1)[-1], title=k) for k in knobs]
                              + [html.Th(h) for h in ("seed", "verdict, necessity [95% CI]", "sufficiency", metric,
                                                         "checkpoint")]))
    body = []
    for row in rows:
        ci = [row.get("necessity_lo"), row.get("necessity_hi")]
        body.append(html.Tr(
            [html.Td(fmt(row.get(k))) for k in knobs]
            + [html.Td(fmt(row.get("seed")), className="ms-num"),
               html.Td(verdict_badge(row.get("verdict"), row.get("necessity"), ci)),
               html.Td(fmt(row.get("sufficiency"), 2), className="ms-num"),
               html.Td(fmt(row.get("metric")), className="ms-num"),
               html.Td(html.Div(checkpoint_links(str(sweep.get("id")), row, context), className="ms-actions"))],
            **{"data-point": row.get("key")},
        ))
    return html.Table([head, html.Tbody(body)], className="ms-table", id="sweeps-points")


def register(app, context) -> None:
    @app.callback(
        Output("sweeps-select", "options"),
        Output("sweeps-select", "value"),
        Output("sweeps-list-error", "children"),
        Input("sweeps-boot", "data"),
        State("token-input", "value"),
    )
    def _list(boot, token):
        with context.client(token) as api:
            out = list_step(api, (boot or {}).get("sweep"))
        return out["options"], out["value"], error_box(out["error"])

    @app.callback(
        Output("sweeps-summary", "children"),
        Output("sweeps-figure", "figure"),
        Output("sweeps-table", "children"),
        Output("sweeps-error", "children"),
        Input("sweeps-select", "value"),
        Input("sweeps-measure", "value"),
        State("token-input", "value"),
    )
    def _view(sweep_id, measure, token):
        with context.client(token) as api:
            out = view_step(api, context, sweep_id, measure)
        return out["summary"], out["figure"], out["table"], error_box(out["error"])

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "syncUrl"),
        Output("sweeps-url-sink", "children"),
        Input("sweeps-select", "value"),
        Input("sweeps-measure", "value"),
        State("sweeps-url-keys", "data"),
        prevent_initial_call=True,
    )
