"""Checkpoints a researcher can tell apart and that analyse themselves (issue 17, point 7):
`file_name` beside `name`, a report job queued on every new upload (Settings.auto_analyze,
MNEMOSCOPE_AUTO_ANALYZE, on by default), and the trace's per-position scores."""
from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings


def test_file_name_tells_apart_checkpoints_with_one_name(upload, make_checkpoint):
    # one run's checkpoints carry one `name`; their files differ
    final = upload(make_checkpoint(1, name="ntm-copy"), "final.safetensors").json()
    step = upload(make_checkpoint(2, name="ntm-copy"), "step-001000.safetensors").json()
    assert final["name"] == step["name"] == "ntm-copy"
    assert (final["file_name"], step["file_name"]) == ("final.safetensors", "step-001000.safetensors")
    assert final["filename"] == final["file_name"]  # the old field stays, same value


def test_auto_analyze_is_on_by_default(monkeypatch):
    monkeypatch.delenv("MNEMOSCOPE_AUTO_ANALYZE", raising=False)
    assert Settings(_env_file=None).auto_analyze is True
    monkeypatch.setenv("MNEMOSCOPE_AUTO_ANALYZE", "false")
    assert Settings(_env_file=None).auto_analyze is False


@pytest.mark.parametrize("auto", [True, False])
def test_a_new_upload_queues_its_report(settings, checkpoint_bytes, job_waiter, auto):
    app = create_app(settings.model_copy(update={"auto_analyze": auto}))
    with TestClient(app) as client:
        def post(name):
            return client.post("/api/checkpoints", files={"file": (name, io.BytesIO(checkpoint_bytes))})

        created = post("tiny.safetensors")
        assert created.status_code == 201
        cid = created.json()["id"]
        jobs = client.get("/api/jobs", params={"checkpoint_id": cid, "kind": "report"}).json()
        assert len(jobs) == (1 if auto else 0)
        assert post("again.safetensors").status_code == 200  # the same bytes: no second report
        assert len(client.get("/api/jobs", params={"checkpoint_id": cid}).json()) == len(jobs)
        if auto:
            assert job_waiter(client, jobs[0]["id"])["status"] == "done"
            assert client.get(f"/api/checkpoints/{cid}").json()["verdict"] in ("functional", "partial", "decorative")


def test_trace_scores_each_scored_position(client, uploaded):
    t = client.post(f"/api/checkpoints/{uploaded['id']}/trace", json={"samples": 2}).json()
    mask, scored, metric = t["mask"]["data"], t["metric_scored"]["data"], t["metric"]["data"]
    assert t["metric_scored"]["axes"] == ["batch", "time"]
    for row_mask, row_scored, row_metric in zip(mask, scored, metric):
        for m, s, v in zip(row_mask, row_scored, row_metric):
            assert (s is None) == (not m)  # null exactly where nothing is scored
            if m:
                assert s == pytest.approx(v)  # wrong bits: the position's own count
