"""The table of job kinds: a kind declared once (even outside the server) gets its route,
its request schema, its GET /api/kinds entry, its `kind` filter value and its worker run."""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mnemoscope.server.app import create_app
from mnemoscope.server.kinds import KINDS

SERVER = Path(__file__).resolve().parents[2] / "server"


@pytest.fixture
def dummy_kind(monkeypatch):
    """The dummy kind's module, imported by a name the spawned workers can import too."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    module = importlib.import_module("dummy_kind")
    module.DONE.clear()
    return module


@pytest.fixture
def dummy_client(settings, dummy_kind):
    app = create_app(settings, kinds={**KINDS, "dummy": dummy_kind.DUMMY})
    with TestClient(app) as client:
        yield client


def test_a_kind_added_to_an_app_gets_its_route_schema_entry_and_worker(dummy_client, dummy_kind, checkpoint_bytes,
                                                                       job_waiter):
    client = dummy_client
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/checkpoints/{checkpoint_id}/dummy"]["post"]
    assert op["summary"] == "Start a dummy job" and {"202", "401", "404", "413", "422"} <= set(op["responses"])
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/EchoRequest"} in body["anyOf"]
    assert spec["components"]["schemas"]["EchoRequest"]["properties"]["repeat"]["maximum"] == 5
    assert "dummy" in spec["components"]["schemas"]["JobOut"]["properties"]["kind"]["enum"]

    entry = next(k for k in client.get("/api/kinds").json() if k["name"] == "dummy")
    assert entry["route"] == "/api/checkpoints/{checkpoint_id}/dummy" and entry["method"] == "POST"
    assert entry["limits"]["repeat"] == {"minimum": 1, "maximum": 5, "default": 2}

    ck = client.post("/api/checkpoints", files={"file": ("t.safetensors", checkpoint_bytes)}).json()
    r = client.post(f"/api/checkpoints/{ck['id']}/dummy", json={"repeat": 3, "seed": 7})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "dummy" and r.json()["request"]["repeat"] == 3
    done = job_waiter(client, r.json()["id"])
    assert done["status"] == "done", done
    data = done["result"]["data"]
    assert done["result"]["kind"] == "dummy"
    assert data["echo"] == [7, 7, 7] and data["arch"] == "lstm" and data["task"] == "copy"
    assert data["pid"] != os.getpid()  # it ran in a worker process
    assert dummy_kind.DONE == [(done["id"], {"echoes": 3})]  # summarised in the worker, on_done in the server

    assert [j["id"] for j in client.get("/api/jobs", params={"kind": "dummy"}).json()] == [done["id"]]
    # a reused result is done too
    again = client.post(f"/api/checkpoints/{ck['id']}/dummy", json={"repeat": 3, "seed": 7}).json()
    assert again["cached"] is True and dummy_kind.DONE[-1] == (again["id"], {"echoes": 3})
    assert client.post(f"/api/checkpoints/{ck['id']}/dummy", json={"repeat": 6}).status_code == 422


def test_the_default_app_knows_only_its_own_kinds(client):
    assert client.post("/api/checkpoints/0000000000000000/dummy", json={}).status_code in (404, 405)
    assert client.get("/api/jobs", params={"kind": "dummy"}).status_code == 422
    for name in KINDS:
        assert client.get("/api/jobs", params={"kind": name}).status_code == 200


def test_kinds_lists_every_kind_and_trace_with_the_servers_limits(client, settings):
    entries = client.get("/api/kinds").json()
    assert [e["name"] for e in entries] == [*KINDS, "trace"]
    spec = client.get("/openapi.json").json()["paths"]
    for e in entries:
        assert e["method"] == "POST" and e["task_param_max"] == settings.max_task_param
        assert spec[e["route"]]["post"]["summary"] == e["summary"]  # the route's own summary
        assert e["limits"]["seed"] == {"minimum": 0, "maximum": 2**31 - 1, "default": 0}
    by_name = {e["name"]: e for e in entries}
    # the trace's schema allows 256 samples, this server fewer
    assert by_name["trace"]["limits"]["samples"] == {"minimum": 1, "maximum": settings.trace_max_samples,
                                                     "default": 1}
    assert by_name["report"]["limits"]["samples"]["minimum"] == 2
    assert set(by_name["patching"]["limits"]) == {"seed", "pairs", "memory_budget_mb"}


def test_a_kind_the_workers_cannot_import_is_refused_at_start_up(settings):
    local = dataclasses.replace(KINDS["gradients"], run=lambda model, task, request, progress: {})
    with pytest.raises(TypeError, match="importable by the worker processes"):
        create_app(settings, kinds={**KINDS, "gradients": local})


def test_a_kind_listed_under_another_name_is_refused(settings):
    with pytest.raises(ValueError, match="listed under the name"):
        create_app(settings, kinds={"other": KINDS["report"]})


def test_each_kind_name_is_spelled_once_in_the_server():
    sources = {p: p.read_text() for p in SERVER.rglob("*.py")}
    for name in KINDS:
        hits = [str(p.relative_to(SERVER)) for p, text in sources.items()
                for _ in re.finditer(re.escape(f'"{name}"'), text)]
        assert hits == [f"kinds/{name}.py"], (name, hits)
