"""Checkpoints: the store's list with verdict badges, upload by drag and drop, delete,
and "Analyze" (a report job that sets the verdict).

The server analyses new uploads by itself (Settings.auto_analyze), so the page shows every
running report job, not only those its own Analyze started: one GET /api/jobs per refresh
lists them all. Each row's task metric is the checkpoint's stored one (what training
measured), else its report's; a report's warnings (collapsed memory and the like) are shown
under its verdict. Reports are fetched once per page and kept (`checkpoints-reports`).

Uploads go from the browser straight to `POST /api/checkpoints` (assets/mnemoscope.js),
so a file of hundreds of MB is streamed by the API server, never base64-encoded through
a Dash callback; the page only hears when an upload ends.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import ALL, ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from ..api import ApiClient, ApiError
from ..components import (error_box, export_buttons, export_payload, fmt, fmt_bytes, info_box, verdict_badge,
                          warnings_row)
from .common import checkpoint_title, file_name
from .jobpage import POLL_MS, job_finished, next_wait

PATH = ""
TITLE = "Checkpoints"
URL_KEYS: list[str] = []


def layout(params: Mapping[str, str], context=None) -> html.Div:
    api_path = context.api_path if context is not None else "/api"
    return html.Div(
        [
            dcc.Store(id="checkpoints-boot", data=dict(params)),
            dcc.Store(id="checkpoints-jobs", data={}),
            dcc.Store(id="checkpoints-reports", data={}),
            dcc.Store(id="checkpoints-poll"),  # the tick, asked for after each answer (jobpage's module doc)
            dcc.Store(id="checkpoints-wait"),
            html.Span(id="checkpoints-wait-sink", hidden=True),
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


NOT_METRICS = ("loss", "train_loss")  # stored beside the task metric by `mnemoscope train`


def task_metric(ckpt: Mapping[str, Any], report: Mapping[str, Any] | None = None) -> tuple[str, Any] | None:
    """(name, value) of the checkpoint's task metric: the one stored with it, else its
    latest report's clean metric; None when neither says."""
    metrics = ckpt.get("metrics") or {}
    wanted = ((report or {}).get("metric") or {}).get("name")
    if wanted in metrics:
        return wanted, metrics[wanted]
    stored = [(k, v) for k, v in metrics.items() if k not in NOT_METRICS and isinstance(v, (int, float))]
    if stored:
        return stored[0]
    metric = (report or {}).get("metric") or {}
    if metric.get("clean") is not None:
        return metric.get("name") or "metric", metric["clean"]
    return None


def checkpoints_table(ckpts: Sequence[Mapping[str, Any]], running: Mapping[str, Mapping] | None, context,
                      reports: Mapping[str, Mapping] | None = None) -> Any:
    """The list: name and file, architecture, task, task metric, size, step and verdict
    (or the running analysis), with the verdict's warnings under it."""
    if not ckpts:
        return info_box("No checkpoints yet: drop a file above, or run `mnemoscope train` and upload its output.")
    running, reports = running or {}, reports or {}
    head = html.Thead(html.Tr([html.Th(h) for h in ("Name", "Architecture", "Task", "Metric", "Parameters", "Size",
                                                    "Step", "Verdict", "")]))
    rows = []
    for c in ckpts:
        cid = c["id"]
        task = c.get("task") or {}
        job = running.get(cid)
        report = reports.get(c.get("report_job_id") or "")
        if job and not job_finished(job):
            verdict = html.Span(f"analysing {float(job.get('progress') or 0):.0%}", className="ms-badge ms-badge-running")
        else:
            verdict = verdict_badge(c.get("verdict"), c.get("reliance_score"))
        metric = task_metric(c, report)
        link = lambda page: context.href(page, {"checkpoint": cid})  # noqa: E731
        rows.append(html.Tr(
            [
                html.Td([dcc.Link(c.get("name") or cid, href=link("explore"), className="ms-link-strong"),
                         # the file, where it tells apart checkpoints of one name (not "x" from x.safetensors)
                         html.Div(file_name(c), className="ms-mono ms-file-name", title="the uploaded file")
                         if checkpoint_title(c) != (c.get("name") or cid) else None,
                         html.Div(cid, className="ms-mono ms-dim"),
                         html.Div("remedies: " + ", ".join(remedies), className="ms-dim ms-remedies")
                         if (remedies := trained_remedies(c)) else None]),
                html.Td(c.get("arch", "?")),
                html.Td(task.get("name") or "n/a"),
                html.Td([html.Span(metric[0], className="ms-dim"), " ", fmt(metric[1], 3)] if metric else "n/a",
                        className="ms-num ms-metric"),
                html.Td(fmt(c.get("parameters")), className="ms-num"),
                html.Td(fmt_bytes(c.get("size_bytes")), className="ms-num"),
                html.Td(fmt(c.get("step")), className="ms-num"),
                html.Td([verdict, warnings_row(report)]),
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
                            message=f"Delete checkpoint {checkpoint_title(c)} ({cid}) and its results?",
                        ),
                    ],
                    className="ms-actions",
                )),
            ],
            **{"data-checkpoint": cid},
        ))
    return html.Table([head, html.Tbody(rows)], className="ms-table", id="checkpoints-list")


def trained_remedies(ckpt: Mapping[str, Any]) -> list[str]:
    """The remedies (mnemoscope.models.remedies.REMEDIES) a checkpoint was trained with, one short
    phrase each, from its config and the training options `mnemoscope train` stores (`extra.train`).
    Fields an architecture lacks are simply absent, so any checkpoint works."""
    config = ckpt.get("config") or {}
    extra = ckpt.get("extra") or {}
    train = extra.get("train") or {}
    zoo_remedies = (extra.get("zoo") or {}).get("remedies") or {}  # a zoo recipe says which fields were remedies
    blocks = config.get("blocks") or []
    found = []
    if zoo_remedies.get("controller_size") is not None:
        found.append(f"small controller {zoo_remedies['controller_size']}")
    if (config.get("bypass_dropout") or 0) > 0:
        found.append(f"bypass dropout {config['bypass_dropout']:g}")
    if (config.get("bypass_bottleneck") or 0) > 0:  # the bypass information bottleneck's beta
        found.append(f"bypass bottleneck {config['bypass_bottleneck']:g}")
    if config.get("memory_init") == "constant":
        found.append("constant memory init")
    if any(config.get(k) for k in ("masking", "deallocation", "sharpness")):
        found.append("DNC fixes")
    if "attention" in blocks and config.get("window") is not None:
        found.append(f"attention window {config['window']}")
    if "slot_memory" in blocks:
        routing = str(config.get("routing") or "expert_choice").replace("_", " ")
        balance = config.get("balance_bias_rate") or 0
        found.append(f"slot memory, {routing}" + (f" + loss-free balancing {balance:g}"
                                                 if balance and "token" in routing else ""))
    if "ReconstructionLoss" in str(train.get("extra_loss") or ""):
        found.append("reconstruction loss")
    if train.get("curriculum"):
        found.append("curriculum")
    if train.get("path_dropout"):
        found.append("path dropout")
    return found


def table_rows(ckpts: Sequence[Mapping[str, Any]], reports: Mapping[str, Mapping] | None = None) -> list[dict]:
    rows = []
    for c in ckpts:
        metric = task_metric(c, (reports or {}).get(c.get("report_job_id") or ""))
        rows.append({"id": c.get("id"), "name": c.get("name"), "file_name": file_name(c), "arch": c.get("arch"),
                     "task": (c.get("task") or {}).get("name"), "metric_name": metric[0] if metric else None,
                     "metric": metric[1] if metric else None, "parameters": c.get("parameters"),
                     "size_bytes": c.get("size_bytes"), "step": c.get("step"), "verdict": c.get("verdict"),
                     "reliance_score": c.get("reliance_score"), "sha256": c.get("sha256"),
                     "created_at": c.get("created_at"), "remedies": trained_remedies(c)})
    return rows


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
    text = (f"{'Already stored' if again else 'Uploaded'}: {checkpoint_title(c) if c else state.get('name')} "
            f"({c.get('arch', '?')}, {(c.get('task') or {}).get('name') or 'no task'}, "
            f"{fmt(c.get('parameters'))} parameters). ")
    children: list = [text]
    if c.get("id"):
        children.append(dcc.Link("Explore it", href=context.href("explore", {"checkpoint": c["id"]}),
                                 className="ms-link-strong"))
    return html.Div(children, className="ms-success", role="status")


def report_summary(result: Any) -> dict:
    """What the table keeps of a report: its metric and the verdict's warnings."""
    data = result.get("data", result) if isinstance(result, Mapping) else {}
    data = data if isinstance(data, Mapping) else {}
    reliance = data.get("reliance") if isinstance(data.get("reliance"), Mapping) else {}
    return {"metric": data.get("metric") or {}, "reliance": {"warnings": reliance.get("warnings") or []}}


def fetch_reports(api: ApiClient, ckpts: Sequence[Mapping[str, Any]], known: Mapping[str, Mapping] | None) -> dict:
    """{report job id: summary} for every checkpoint's latest report; those already known
    are not asked for again (a report job's result never changes)."""
    reports = dict(known or {})
    for c in ckpts:
        job_id = c.get("report_job_id")
        if not job_id or job_id in reports:
            continue
        try:
            reports[job_id] = report_summary(api.job(job_id).get("result"))
        except ApiError:
            reports[job_id] = {}  # gone with its checkpoint, or unreadable: the row shows no extras
    return reports


def report_jobs(api: ApiClient, started: Mapping[str, Mapping]) -> tuple[dict, dict, str | None]:
    """({checkpoint id: its unfinished report job}, the page's own jobs updated, a failure
    to show): every report job from one list request, uploads' automatic ones included."""
    listed = api.jobs(kind="report", limit=500)
    by_id = {j.get("id"): j for j in listed}
    running: dict[str, dict] = {}
    for job in listed:  # newest first
        if not job_finished(job) and job.get("checkpoint_id"):
            running.setdefault(job["checkpoint_id"], _slim(job))
    started = dict(started)
    error = None
    for cid, job in list(started.items()):
        if job_finished(job):
            continue
        current = by_id.get(job.get("id"))
        try:
            started[cid] = _slim(current or api.job(job["id"]))
        except ApiError as exc:
            started.pop(cid)
            error = error or str(exc)
            continue
        if started[cid].get("status") == "failed":
            error = error or f"analysis of {cid} failed: {started[cid].get('error') or 'no reason given'}"
        elif not job_finished(started[cid]):
            running.setdefault(cid, started[cid])
    return running, started, error


def table_step(api: ApiClient, context, trigger: Any, jobs: Mapping[str, Mapping] | None,
               reports: Mapping[str, Mapping] | None = None) -> dict:
    """Refresh the list; start a report ("Analyze") or delete first when that was clicked;
    follow every running report job. Returns table, jobs, poll_disabled, error, export,
    reports."""
    jobs = dict(jobs or {})
    error = None
    if isinstance(trigger, Mapping):
        cid = trigger.get("id")
        try:
            if trigger.get("type") == "ckpt-delete":
                api.delete_checkpoint(cid)
                jobs.pop(cid, None)
            elif trigger.get("type") == "ckpt-analyze":
                jobs[cid] = _slim(api.start_report(cid, {}))
        except ApiError as exc:
            error = str(exc)
    try:
        running, jobs, job_error = report_jobs(api, jobs)
    except ApiError as exc:
        running, job_error = {}, str(exc)
    error = error or job_error
    try:
        ckpts = api.checkpoints()
    except ApiError as exc:
        return {"table": no_update, "jobs": jobs, "poll_disabled": True, "error": str(exc), "export": no_update,
                "reports": no_update}
    reports = fetch_reports(api, ckpts, reports)
    return {
        "table": checkpoints_table(ckpts, running, context, reports),
        "jobs": jobs,
        "poll_disabled": not running,
        "error": error,
        "export": export_payload("checkpoints", ckpts, table_rows(ckpts, reports)),
        "reports": reports,
    }


def _slim(job: Mapping) -> dict:
    """What the page keeps of a job between polls (not its result)."""
    return {k: job.get(k) for k in ("id", "status", "progress", "error", "kind", "checkpoint_id")}


def register(app, context) -> None:
    @app.callback(
        Output("checkpoints-table", "children"),
        Output("checkpoints-jobs", "data"),
        Output("checkpoints-wait", "data"),
        Output("checkpoints-error", "children"),
        Output({"type": "result", "name": "checkpoints"}, "data"),
        Output("checkpoints-reports", "data"),
        Input("checkpoints-boot", "data"),
        Input("upload-done", "data"),
        Input({"type": "ckpt-delete", "id": ALL}, "submit_n_clicks"),
        Input({"type": "ckpt-analyze", "id": ALL}, "n_clicks"),
        Input("checkpoints-poll", "data"),
        State("checkpoints-jobs", "data"),
        State("checkpoints-reports", "data"),
        State("token-input", "value"),
    )
    def _table(_boot, _upload, deletes, analyses, _tick, jobs, reports, token):
        trigger = ctx.triggered_id
        # a re-rendered table fires its new buttons' inputs with no clicks: ignore those
        if isinstance(trigger, Mapping) and not (ctx.triggered and ctx.triggered[0].get("value")):
            return no_update, no_update, no_update, no_update, no_update, no_update
        with context.client(token) as api:
            out = table_step(api, context, trigger, jobs, reports)
        wait = next_wait(out["poll_disabled"], "checkpoints-poll", POLL_MS * 2)
        return out["table"], out["jobs"], wait, error_box(out["error"]), out["export"], out["reports"]

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "nextPoll"),
        Output("checkpoints-wait-sink", "children"),
        Input("checkpoints-wait", "data"),
        prevent_initial_call=True,
    )

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
