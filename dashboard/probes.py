"""The probe chooser of the job pages: run a job on the checkpoint's own task, or on a
prompt-pair probe (a JSONL uploaded to `POST /api/probes`), uploaded from here too.

A chosen probe becomes the task of every job the page starts,
`{"name": "prompt_pairs", "params": {"probe": "<id>"}}`; the server fills in its pairs.
The callback bodies are plain functions of a client and the inputs (`load_options`,
`upload_step`, `with_probe`), so tests call them with a fake client.
"""
from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence

from dash import Input, Output, State, dcc, html, no_update

from .api import ApiClient, ApiError
from .components import error_box, info_box

OWN_TASK = ""  # the dropdown's value for "the checkpoint's own task"
PROBE_TASK = "prompt_pairs"
MAX_UPLOAD_BYTES = 1 << 20  # the server's cap on a request body


def probe_options(probes: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The dropdown's options: the checkpoint's own task first, then each probe."""
    options = [{"label": "the checkpoint's own task", "value": OWN_TASK}]
    for p in probes:
        patchable = p.get("patchable")
        extra = f", {patchable} patchable" if patchable is not None and patchable != p.get("pairs") else ""
        options.append({"label": f"probe {p.get('name') or p['id']} ({p.get('pairs', '?')} pairs{extra})",
                        "value": p["id"]})
    return options


def task_body(probe_id: str | None) -> dict | None:
    """The request's `task` for a chosen probe; None keeps the checkpoint's own task."""
    if not probe_id:
        return None
    return {"name": PROBE_TASK, "params": {"probe": str(probe_id)}}


def with_probe(requests: Mapping[str, tuple[str, str, dict]], probe_id: str | None) -> dict:
    """The page's job requests, each with the probe as its task when one is chosen."""
    task = task_body(probe_id)
    if task is None:
        return dict(requests)
    return {key: (cid, kind, {**body, "task": task}) for key, (cid, kind, body) in requests.items()}


def load_options(api: ApiClient) -> tuple[list[dict], Any]:
    """(options, error box) for the dropdown, from GET /api/probes."""
    try:
        return probe_options(api.probes()), None
    except ApiError as exc:
        return probe_options([]), error_box(f"the probes could not be listed: {exc}")


def decode_upload(contents: str) -> bytes:
    """dcc.Upload's `data:<type>;base64,<data>` as bytes; ValueError when it is not that."""
    head, _, data = str(contents).partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError("the browser sent the file in a form this page does not read")
    return base64.b64decode(data, validate=True)


def upload_step(api: ApiClient, contents: str | None, filename: str | None) -> tuple[Any, Any, Any]:
    """Upload a probe file: (options, chosen value, message). The new probe is chosen;
    a refused file leaves the choice as it was and says why (the server names the line)."""
    if not contents:
        return no_update, no_update, None
    try:
        data = decode_upload(contents)
        probe = api.upload_probe(filename or "probe.jsonl", data)
    except (ValueError, ApiError) as exc:
        return no_update, no_update, error_box(f"{filename or 'the probe'}: {exc}")
    options, error = load_options(api)
    note = info_box(f"Probe {probe.get('name') or probe['id']}: {probe.get('pairs')} pairs, "
                    f"{probe.get('patchable')} with a corrupted answer (what patching scores).")
    return options, probe["id"], error or note


def probe_field(page_name: str) -> html.Div:
    """The dropdown (`{page}-probe`), its upload button (`{page}-probe-upload`) and the
    upload's message (`{page}-probe-message`)."""
    dropdown = dcc.Dropdown(id=f"{page_name}-probe", options=probe_options([]), value=OWN_TASK, clearable=False,
                            className="ms-dropdown")
    upload = dcc.Upload(html.Button("Upload probe…", className="ms-btn", type="button"),
                        id=f"{page_name}-probe-upload", accept=".jsonl,.json,.txt", max_size=MAX_UPLOAD_BYTES,
                        multiple=False)
    return html.Div([
        html.Label([html.Span("Task", className="ms-field-label"), dropdown,
                    html.Small('a probe: JSONL of {"clean", "corrupted", "answer"} token ids a line',
                               className="ms-hint")],
                   className="ms-field ms-field-grow"),
        upload,
        html.Div(id=f"{page_name}-probe-message"),
    ], className="ms-field")


def register(app, context, page_name: str, boot_id: str) -> None:
    """Fill the dropdown when the page loads, and upload from its button."""
    @app.callback(
        Output(f"{page_name}-probe", "options"),
        Output(f"{page_name}-probe-message", "children"),
        Input(boot_id, "data"),
        State("token-input", "value"),
    )
    def _load(_boot, token):
        with context.client(token) as api:
            return load_options(api)

    @app.callback(
        Output(f"{page_name}-probe", "options", allow_duplicate=True),
        Output(f"{page_name}-probe", "value"),
        Output(f"{page_name}-probe-message", "children", allow_duplicate=True),
        Input(f"{page_name}-probe-upload", "contents"),
        State(f"{page_name}-probe-upload", "filename"),
        State("token-input", "value"),
        prevent_initial_call=True,
    )
    def _upload(contents, filename, token):
        with context.client(token) as api:
            return upload_step(api, contents, filename)
