"""The probe chooser: options, the upload, and jobs started on the chosen probe."""
from __future__ import annotations

import base64

import httpx
from dash import no_update

from mnemoscope.dashboard import probes
from mnemoscope.dashboard.api import ApiClient, ApiError
from mnemoscope.dashboard.pages import jobpage, patch

from .test_pages import PATCHING, done

PROBE = {"id": "p1", "name": "ioi", "pairs": 3, "patchable": 2}


class ProbeApi:
    """A client with probes: `upload_probe` refuses with `refuse` when set."""

    def __init__(self, refuse: str | None = None):
        self.stored: list[dict] = []
        self.uploaded: list[tuple[str, bytes]] = []
        self.refuse = refuse

    def probes(self):
        return list(self.stored)

    def upload_probe(self, filename, content, **_):
        self.uploaded.append((filename, content))
        if self.refuse:
            raise ApiError(self.refuse, 422)
        self.stored.append(PROBE)
        return PROBE


def as_upload(data: bytes) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()


def test_options_put_the_checkpoints_own_task_first():
    options = probes.probe_options([PROBE, {"id": "p2", "pairs": 4, "patchable": 4}])
    assert [o["value"] for o in options] == [probes.OWN_TASK, "p1", "p2"]
    assert options[1]["label"] == "probe ioi (3 pairs, 2 patchable)" and options[2]["label"] == "probe p2 (4 pairs)"


def test_a_chosen_probe_becomes_every_jobs_task():
    requests = {"ablation": ("c1", "ablations", {"samples": 8}), "report": ("c1", "report", {})}
    assert probes.with_probe(requests, None) == requests
    chosen = probes.with_probe(requests, "p1")
    task = {"name": "prompt_pairs", "params": {"probe": "p1"}}
    assert chosen == {"ablation": ("c1", "ablations", {"samples": 8, "task": task}), "report": ("c1", "report", {"task": task})}
    assert requests["ablation"][2] == {"samples": 8}  # the page's own bodies are left alone


def test_upload_chooses_the_new_probe():
    api = ProbeApi()
    options, value, message = probes.upload_step(api, as_upload(b'{"clean": [1], "corrupted": [2], "answer": 3}\n'),
                                                 "ioi.jsonl")
    assert api.uploaded == [("ioi.jsonl", b'{"clean": [1], "corrupted": [2], "answer": 3}\n')]
    assert value == "p1" and [o["value"] for o in options] == ["", "p1"]
    assert "3 pairs, 2 with a corrupted answer" in str(message.to_plotly_json())


def test_a_refused_upload_says_why_and_keeps_the_choice():
    api = ProbeApi(refuse="probe ioi.jsonl: line 2: not valid JSON (HTTP 422)")
    options, value, message = probes.upload_step(api, as_upload(b"{"), "ioi.jsonl")
    assert options is no_update and value is no_update
    assert "line 2: not valid JSON" in str(message.to_plotly_json())
    _, _, message = probes.upload_step(api, "not a data url", "x.jsonl")
    assert "does not read" in str(message.to_plotly_json())


def test_patch_page_runs_on_the_chosen_probe(fake_api):
    api = fake_api(jobs={"patching-c1": done("patching", PATCHING)})
    jobpage.run_step(patch.PAGE, api, "patch-run", "c1", [["memory.read"], "denoise", "exact", 8, 3], None, "p1")
    assert api.started[0][2]["task"] == {"name": "prompt_pairs", "params": {"probe": "p1"}}
    api = fake_api(jobs={"patching-c1": done("patching", PATCHING)})
    jobpage.run_step(patch.PAGE, api, "patch-run", "c1", [["memory.read"], "denoise", "exact", 8, 3], None, "")
    assert "task" not in api.started[0][2]


def test_patch_page_layout_has_the_chooser():
    layout = str(patch.PAGE.layout({}).to_plotly_json())
    assert "patch-probe" in layout and "patch-probe-upload" in layout


def test_client_uploads_a_probe_as_multipart():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=PROBE)

    api = ApiClient("http://api.test", transport=httpx.MockTransport(handler))
    assert api.upload_probe("ioi.jsonl", b"{}\n", name="IOI", tokenizer=b"{}")["id"] == "p1"
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/api/probes"
    body = request.content
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"; filename="ioi.jsonl"' in body and b'name="tokenizer"; filename="tokenizer.json"' in body
    assert b'name="name"' in body and b"IOI" in body
