"""Checkpoint routes: upload, dedupe, list/get/file/sites/delete, hostile uploads, auth, CORS."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import save as st_save

from mnemoscope.server.app import create_app


# -- happy paths -------------------------------------------------------------------------------------

def test_upload_returns_the_record(upload, checkpoint_bytes, settings):
    r = upload(checkpoint_bytes, "tiny.safetensors")
    assert r.status_code == 201, r.text
    body = r.json()
    sha = hashlib.sha256(checkpoint_bytes).hexdigest()
    assert body["sha256"] == sha and body["id"] == sha[:16]
    assert body["size_bytes"] == len(checkpoint_bytes)
    assert body["arch"] == "lstm" and body["config"]["hidden_size"] == 8
    assert body["task"]["name"] == "copy"
    assert body["parameters"] == sum(p.numel() for p in _lstm().parameters())
    assert body["name"] == "tiny" and body["filename"] == "tiny.safetensors"
    assert body["created_at"].endswith("Z") and body["verdict"] is None
    stored = settings.data_dir / "checkpoints" / f"{sha}.safetensors"
    assert stored.read_bytes() == checkpoint_bytes


def _lstm():
    from mnemoscope.models import build_model

    return build_model("lstm", dict(input_size=5, output_size=4, hidden_size=8))


def test_same_bytes_same_id(upload, client, checkpoint_bytes, make_checkpoint):
    first = upload(checkpoint_bytes, "a.safetensors")
    again = upload(checkpoint_bytes, "b.safetensors")
    other = upload(make_checkpoint(1))
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert first.json() == again.json()  # the first upload's record, name and all
    assert other.json()["id"] != first.json()["id"]
    assert [c["id"] for c in client.get("/api/checkpoints").json()] == [first.json()["id"], other.json()["id"]]


def test_get_file_sites_delete(client, uploaded, checkpoint_bytes, settings):
    cid = uploaded["id"]
    assert client.get(f"/api/checkpoints/{cid}").json() == uploaded
    f = client.get(f"/api/checkpoints/{cid}/file")
    assert f.status_code == 200 and f.content == checkpoint_bytes
    assert f.headers["content-type"] == "application/octet-stream"
    assert "tiny.safetensors" in f.headers["content-disposition"]

    sites = client.get(f"/api/checkpoints/{cid}/sites").json()
    by_name = {s["name"]: s for s in sites}
    assert set(by_name) == {"controller.output", "controller.cell", "controller.state", "output"}
    assert by_name["controller.output"] == {
        "name": "controller.output", "kind": "bypass", "shape": [8], "axes": ["feature"],
        "on_request": False, "distribution": False, "doc": by_name["controller.output"]["doc"],
    }

    assert client.delete(f"/api/checkpoints/{cid}").status_code == 204
    assert client.get(f"/api/checkpoints/{cid}").status_code == 404
    assert client.get("/api/checkpoints").json() == []
    assert list((settings.data_dir / "checkpoints").iterdir()) == []
    assert client.delete(f"/api/checkpoints/{cid}").status_code == 404


@pytest.mark.parametrize("path", ["/api/checkpoints/{x}", "/api/checkpoints/{x}/file", "/api/checkpoints/{x}/sites"])
def test_unknown_ids_are_404(client, path):
    r = client.get(path.format(x="0123456789abcdef"))
    assert r.status_code == 404
    assert "no checkpoint" in r.json()["detail"]


def test_pytorch_ntm_file_is_imported(upload, pytorch_ntm_file):
    r = upload(pytorch_ntm_file.read_bytes(), pytorch_ntm_file.name)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["arch"] == "ntm" and body["format"] == "torch"
    assert body["source"] == "pytorch-ntm"
    assert body["task"]["name"] == "copy"
    assert body["name"] == "copy-task-1-batch-40000" and body["filename"] == pytorch_ntm_file.name


# -- hostile and broken uploads ---------------------------------------------------------------------

class _Touch:
    """Unpickling this creates a file: what a malicious checkpoint does."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


class _System:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _retagged(good: bytes, tmp: Path, *, metadata=None, tensors=None) -> bytes:
    """The good checkpoint with its metadata and/or tensors edited."""
    path = tmp / "src.safetensors"
    path.write_bytes(good)
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        data = {k: f.get_tensor(k) for k in f.keys()}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    if tensors:
        data = tensors(data)
    return st_save(data, metadata=meta)


def _huge_header(good: bytes) -> bytes:
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8 : 8 + n])
    header = {"__metadata__": header["__metadata__"],
              "cells.0.weight_ih": {"dtype": "F32", "shape": [100_000, 100_000, 100_000],
                                    "data_offsets": [0, 4 * 10**15]}}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * 64


def _nan(tensors):
    key = next(iter(tensors))
    bad = tensors[key].clone()
    bad.view(-1)[0] = float("nan")
    return {**tensors, key: bad}


def _adversarial_cases(good: bytes, tmp: Path, marker: Path, cap: int) -> dict:
    torch_pickle = io.BytesIO()
    torch.save({"state_dict": _Touch(marker)}, torch_pickle)
    return {
        "pickle that creates a file": (pickle.dumps(_Touch(marker), protocol=2), "model.pt", 422),
        "pickle (protocol 5) that creates a file": (pickle.dumps(_Touch(marker), protocol=5), "model.pt", 422),
        "torch zip with a pickle payload": (torch_pickle.getvalue(), "model.pt", 422),
        "pickle running a shell command": (pickle.dumps(_System(f"touch {marker}")), "model.pth", 422),
        "truncated safetensors": (good[: len(good) - 100], "cut.safetensors", 422),
        "header length beyond the file": (b"\xff" * 8 + b"{}", "x.safetensors", 422),
        "header claiming huge tensors": (_huge_header(good), "huge.safetensors", 422),
        "wrong shapes for the config": (_retagged(good, tmp, metadata={"config": {
            "input_size": 5, "output_size": 4, "hidden_size": 16, "num_layers": 1}}), "shapes.safetensors", 422),
        "unknown architecture": (_retagged(good, tmp, metadata={"arch": "hypernetwork"}), "arch.safetensors", 422),
        "NaN weights": (_retagged(good, tmp, tensors=_nan), "nan.safetensors", 422),
        "empty file": (b"", "empty.safetensors", 422),
        "not a checkpoint at all": (b"hello, world\n" * 10, "notes.txt", 422),
        "file name with ../": (good, "../../escape.safetensors", 422),
        "file name with a backslash path": (good, "..\\..\\escape.safetensors", 422),
        "file over the cap": (b"\0" * (cap + 1), "big.safetensors", 413),
    }


def test_the_touch_payload_is_live(tmp_path):
    """Sanity check of the test itself: unpickling the payload really creates a file."""
    target = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Touch(target)))
    assert target.exists()


def test_adversarial_uploads_are_refused_and_leave_no_trace(client, upload, checkpoint_bytes, settings, snapshot,
                                                            tmp_path):
    marker = tmp_path / "pwned"
    cases = _adversarial_cases(checkpoint_bytes, tmp_path, marker, settings.max_upload_bytes)
    upload(checkpoint_bytes, "kept.safetensors")  # the store is not empty: nothing may change in it
    before = snapshot(settings.data_dir)
    listing = client.get("/api/checkpoints").json()
    for label, (data, filename, status) in cases.items():
        if label.startswith("file name"):
            data = checkpoint_bytes[:-1] + b" "  # new bytes, so dedupe cannot answer before the name check
        r = upload(data, filename)
        assert r.status_code == status, f"{label}: {r.status_code} {r.text}"
        detail = r.json()["detail"]
        assert isinstance(detail, str) and len(detail) > 10, label
        assert snapshot(settings.data_dir) == before, f"{label}: the store changed"
        assert client.get("/api/checkpoints").json() == listing, label
        assert not marker.exists(), f"{label}: the payload ran"
    assert not (tmp_path.parent / "escape.safetensors").exists()
    assert client.app.state.store.consistency_problems() == []


@pytest.mark.parametrize("label, fragment", [
    ("truncated safetensors", "truncated"),
    ("header claiming huge tensors", "huge.safetensors"),
    ("wrong shapes for the config", "shape"),
    ("unknown architecture", "hypernetwork"),
    ("NaN weights", "NaN"),
    ("empty file", "empty"),
    ("pickle that creates a file", "unpickle"),
    ("file name with ../", "directory"),
    ("file over the cap", "limit"),
])
def test_refusals_name_the_problem(upload, checkpoint_bytes, settings, tmp_path, label, fragment):
    data, filename, status = _adversarial_cases(checkpoint_bytes, tmp_path, tmp_path / "m", settings.max_upload_bytes)[label]
    r = upload(data, filename)
    assert r.status_code == status
    assert fragment.lower() in r.json()["detail"].lower(), r.json()["detail"]
    assert "tmp" not in r.json()["detail"] and ".part" not in r.json()["detail"]  # names the upload, not our temp file


def test_not_multipart_is_415_and_missing_field_422(client):
    r = client.post("/api/checkpoints", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/api/checkpoints", files={"weights": ("a.safetensors", b"x")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]


# -- auth and CORS ----------------------------------------------------------------------------------

def test_token_guards_mutating_routes(settings, checkpoint_bytes):
    settings = settings.model_copy(update={"token": "s3cret"})
    with TestClient(create_app(settings)) as client:
        files = {"file": ("t.safetensors", checkpoint_bytes)}
        assert client.post("/api/checkpoints", files=files).status_code == 401
        r = client.post("/api/checkpoints", files=files, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.post("/api/checkpoints", files=files, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 201
        cid = r.json()["id"]
        # reads stay open
        assert client.get("/api/checkpoints").status_code == 200
        assert client.get(f"/api/checkpoints/{cid}/file").status_code == 200
        assert client.post(f"/api/checkpoints/{cid}/ablations", json={}).status_code == 401
        assert client.delete(f"/api/checkpoints/{cid}").status_code == 401
        assert client.delete("/api/jobs/whatever").status_code == 401
        assert client.delete(f"/api/checkpoints/{cid}", headers={"Authorization": "Bearer s3cret"}).status_code == 204


def test_cors_is_off_by_default_and_on_when_configured(settings):
    headers = {"Origin": "https://lab.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(settings)) as client:
        r = client.get("/api/health", headers={"Origin": "https://lab.example"})
        assert "access-control-allow-origin" not in r.headers
    on = settings.model_copy(update={"cors_origins": ["https://lab.example"]})
    with TestClient(create_app(on)) as client:
        r = client.options("/api/checkpoints", headers=headers)
        assert r.headers["access-control-allow-origin"] == "https://lab.example"


def test_root_redirects_to_the_dashboard(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/dashboard/"
