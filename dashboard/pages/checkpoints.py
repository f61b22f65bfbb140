"""Checkpoints: the store's list with verdict badges, upload by drag and drop, delete,
and "Analyze" (a report job that sets the verdict).

Uploads go from the browser straight to `POST /api/checkpoints` (assets/mnemoscope.js),
so a file of hundreds of MB is streamed by the API server, never base64-encoded through
a Dash callback; the page only hears when an upload ends.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import ALL, ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from ..api import ApiClient, ApiError
from ..components import error_box, export_buttons, export_payload, fmt, fmt_bytes, info_box, verdict_badge
from .jobpage import POLL_MS, job_finished

PATH = ""
TITLE = "Checkpoints"
URL_KEYS: list[str] = []


def layout(params: Mapping[str, str], context=None) -> html.Div:
    api_path = context.api_path if context is not None else "/api"
    return html.Div(
        [
            dcc.Store(id="checkpoints-boot", data=dict(params)),
            dcc.Store(id="checkpoints-jobs", data={}),
            dcc.Interval(id="checkpoints-poll", interval=POLL_MS * 2, disabled=True),
            dcc.Store(id="upload-state"),
            dcc.Store(id="upload-done"),
            html.Div(
                [
                    html.Div("Drop checkpoint files here", className="ms-drop-title"),
                    html.Div(".safetensors from mnemoscope train, or a PyTorch file (.pt/.pth) of a supported "
                             "model; or click to choose. Files go straight to the server (up to its size limit).",
                             className="ms-drop-hint"),
                ],
                className="ms-dropzone",
                id="upload-zone",
                tabIndex="0",
                role="button",
                **{"data-api": api_path, "aria-label": "upload checkpoint files: drop them here or press to choose"},
            ),
            html.Div(
                [html.Div(className="ms-progress-fill", id="upload-progress-fill", style={"width": "0%"}),
                 html.Span(id="upload-progress-label", className="ms-progress-label")],
                id="upload-progress", className="ms-progress ms-progress-idle",
            ),
            html.Div(id="upload-message"),
            html.Div(id="checkpoints-error"),
            html.Div(
                [html.H2("Checkpoints", className="ms-h2"), export_buttons("checkpoints")],
                className="ms-row-between",
            ),
            dcc.Loading(html.Div(id="checkpoints-table", className="ms-table-wrap"), type="dot", delay_show=400),
        ],
        className="ms-page",
    )


def checkpoints_table(ckpts: Sequence[Mapping[str, Any]], jobs: Mapping[str, Mapping] | None, context) -> Any:
    if not ckpts:
        return info_box("No checkpoints yet: drop a file above, or run `mnemoscope train` and upload its output.")
    jobs = jobs or {}
    head = html.Thead(html.Tr([html.Th(h) for h in
                               ("Name", "Architecture", "Task", "Parameters", "Size", "Step", "Verdict", "")]))
    rows = []
    for c in ckpts:
        cid = c["id"]
        task = c.get("task") or {}
        job = jobs.get(cid)
        if job and not job_finished(job):
            verdict = html.Span(f"analysing {float(job.get('progress') or 0):.0%}", className="ms-badge ms-badge-running")
        else:
            verdict = verdict_badge(c.get("verdict"), c.get("reliance_score"))
        link = lambda page: context.href(page, {"checkpoint": cid})  # noqa: E731
        rows.append(html.Tr(
            [
                html.Td([dcc.Link(c.get("name") or cid, href=link("explore"), className="ms-link-strong"),
                         html.Div(cid, className="ms-mono ms-dim")]),
                html.Td(c.get("arch", "?")),
                html.Td(task.get("name") or "n/a"),
                html.Td(fmt(c.get("parameters")), className="ms-num"),
                html.Td(fmt_bytes(c.get("size_bytes")), className="ms-num"),
                html.Td(fmt(c.get("step")), className="ms-num"),
                html.Td(verdict),
                html.Td(html.Div(
                    [
                        dcc.Link("Explore", href=link("explore"), className="ms-btn ms-btn-small"),
                        dcc.Link("Ablate", href=link("ablate"), className="ms-btn ms-btn-small"),
                        dcc.Link("Patch", href=link("patch"), className="ms-btn ms-btn-small"),
                        html.Button("Analyze", id={"type": "ckpt-analyze", "id": cid}, className="ms-btn ms-btn-small",
                                    title="run the full report (ablations, patching, gradients) for a verdict"),
                        dcc.ConfirmDialogProvider(
                            html.Button("Delete", className="ms-btn ms-btn-small ms-btn-danger"),
                            id={"type": "ckpt-delete", "id": cid},
                            message=f"Delete checkpoint {c.get('name') or cid} ({cid}) and its results?",
                        ),
                    ],
                    className="ms-actions",
                )),
            ],
            **{"data-checkpoint": cid},
        ))
    return html.Table([head, html.Tbody(rows)], className="ms-table", id="checkpoints-list")


def table_rows(ckpts: Sequence[Mapping[str, Any]]) -> list[dict]:
    return [{"id": c.get("id"), "name": c.get("name"), "arch": c.get("arch"),
             "task": (c.get("task") or {}).get("name"), "parameters": c.get("parameters"),
             "size_bytes": c.get("size_bytes"), "step": c.get("step"), "verdict": c.get("verdict"),
             "reliance_score": c.get("reliance_score"), "sha256": c.get("sha256"), "created_at": c.get("created_at")}
            for c in ckpts]


def upload_message(state: Mapping | None, context) -> Any:
    """What the page says when an upload ends."""
    if not state:
        return None
    if state.get("phase") == "error":
        return error_box(f"{state.get('name', 'the file')}: {state.get('error') or 'upload failed'}")
    if state.get("phase") != "done":
        return None
    c = state.get("checkpoint") or {}
    again = state.get("status") == 200
    text = (f"{'Already stored' if again else 'Uploaded'}: {c.get('name') or state.get('name')} "
            f"({c.get('arch', '?')}, {(c.get('task') or {}).get('name') or 'no task'}, "
            f"{fmt(c.get('parameters'))} parameters). ")
    children: list = [text]
    if c.get("id"):
        children.append(dcc.Link("Explore it", href=context.href("explore", {"checkpoint": c["id"]}),
                                 className="ms-link-strong"))
    return html.Div(children, className="ms-success", role="status")


def table_step(api: ApiClient, context, trigger: Any, jobs: Mapping[str, Mapping] | None) -> dict:
    """Refresh the list; start a report ("Analyze") or delete first when that was clicked;
    poll running report jobs. Returns table, jobs, poll_disabled, error, export."""
    jobs = dict(jobs or {})
    error = None
    if isinstance(trigger, Mapping):
        cid = trigger.get("id")
        try:
            if trigger.get("type") == "ckpt-delete":
                api.delete_checkpoint(cid)
                jobs.pop(cid, None)
            elif trigger.get("type") == "ckpt-analyze":
                jobs[cid] = api.start_report(cid, {})
        except ApiError as exc:
            error = str(exc)
    for cid, job in list(jobs.items()):
        if job_finished(job):
            continue
        try:
            jobs[cid] = api.job(job["id"])
        except ApiError as exc:
            jobs.pop(cid)
            error = error or str(exc)
        if jobs.get(cid, {}).get("status") == "failed":
            error = error or f"analysis of {cid} failed: {jobs[cid].get('error') or 'no reason given'}"
    try:
        ckpts = api.checkpoints()
    except ApiError as exc:
        return {"table": no_update, "jobs": jobs, "poll_disabled": True, "error": str(exc), "export": no_update}
    running = any(not job_finished(j) for j in jobs.values())
    return {
        "table": checkpoints_table(ckpts, jobs, context),
        "jobs": {k: _slim(v) for k, v in jobs.items()},
        "poll_disabled": not running,
        "error": error,
        "export": export_payload("checkpoints", ckpts, table_rows(ckpts)),
    }


def _slim(job: Mapping) -> dict:
    """What the page keeps of a job between polls (not its result)."""
    return {k: job.get(k) for k in ("id", "status", "progress", "error", "kind")}


def register(app, context) -> None:
    @app.callback(
        Output("checkpoints-table", "children"),
        Output("checkpoints-jobs", "data"),
        Output("checkpoints-poll", "disabled"),
        Output("checkpoints-error", "children"),
        Output({"type": "result", "name": "checkpoints"}, "data"),
        Input("checkpoints-boot", "data"),
        Input("upload-done", "data"),
        Input({"type": "ckpt-delete", "id": ALL}, "submit_n_clicks"),
        Input({"type": "ckpt-analyze", "id": ALL}, "n_clicks"),
        Input("checkpoints-poll", "n_intervals"),
        State("checkpoints-jobs", "data"),
        State("token-input", "value"),
    )
    def _table(_boot, _upload, deletes, analyses, _tick, jobs, token):
        trigger = ctx.triggered_id
        # a re-rendered table fires its new buttons' inputs with no clicks: ignore those
        if isinstance(trigger, Mapping) and not (ctx.triggered and ctx.triggered[0].get("value")):
            return no_update, no_update, no_update, no_update, no_update
        with context.client(token) as api:
            out = table_step(api, context, trigger, jobs)
        return out["table"], out["jobs"], out["poll_disabled"], error_box(out["error"]), out["export"]

    @app.callback(
        Output("upload-message", "children"),
        Input("upload-done", "data"),
        prevent_initial_call=True,
    )
    def _uploaded(state):
        return upload_message(state, context)

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "uploadProgress"),
        Output("upload-progress-fill", "style"),
        Output("upload-progress-label", "children"),
        Output("upload-progress", "className"),
        Input("upload-state", "data"),
        prevent_initial_call=True,
    )
