"""Job routes: start, poll, reuse, dedupe, cancel, verdict badge, validation, deletion."""
from __future__ import annotations

import pytest

ABLATIONS = {"samples": 4, "specs": [
    {"sites": ["controller.output"], "mode": "resample"},
    {"sites": ["controller.*"], "mode": "zero", "steps": [1, 2], "elements": {"feature": [0, 1]}, "label": "early"},
]}


def test_ablation_job_runs_and_its_result_is_reused(client, uploaded, job_waiter):
    cid = uploaded["id"]
    r = client.post(f"/api/checkpoints/{cid}/ablations", json=ABLATIONS)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["kind"] == "ablations" and job["cached"] is False
    # the request is stored normalised: the task resolved, globs expanded, defaults filled in
    assert job["request"]["task"] == uploaded["task"]
    assert job["request"]["specs"][1]["sites"] == ["controller.cell", "controller.output", "controller.state"]

    done = job_waiter(client, job["id"])
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and done["error"] is None and done["finished_at"]
    results = done["result"]["data"]
    assert [a["label"] for a in results] == ["resample controller.output", "early"]
    assert all(a["metric_name"] == "wrong_bits" and isinstance(a["metric_delta"], float) for a in results)

    again = client.post(f"/api/checkpoints/{cid}/ablations", json=ABLATIONS)
    assert again.status_code == 202
    cached = again.json()
    assert cached["status"] == "done" and cached["cached"] is True and cached["id"] != job["id"]
    assert client.get(f"/api/jobs/{cached['id']}").json()["result"] == done["result"]

    listed = client.get("/api/jobs", params={"checkpoint_id": cid}).json()
    assert [j["id"] for j in listed] == [cached["id"], job["id"]]  # newest first
    assert all(j["result"] is None for j in listed)  # results only on GET /api/jobs/{id}
    assert client.get("/api/jobs", params={"status": "failed"}).json() == []
    assert len(client.get("/api/jobs", params={"kind": "ablations", "limit": 1}).json()) == 1

    # a different seed is a different request
    other = client.post(f"/api/checkpoints/{cid}/ablations", json={**ABLATIONS, "seed": 1}).json()
    assert other["cached"] is False


def test_report_sets_the_checkpoint_verdict(client, uploaded, job_waiter):
    cid = uploaded["id"]
    assert client.get(f"/api/checkpoints/{cid}").json()["verdict"] is None
    job = client.post(f"/api/checkpoints/{cid}/report", json={"samples": 4}).json()
    done = job_waiter(client, job["id"])
    assert done["status"] == "done", done
    reliance = done["result"]["data"]["reliance"]
    record = client.get(f"/api/checkpoints/{cid}").json()
    assert record["verdict"] == reliance["verdict"] and record["verdict"]
    assert record["reliance_score"] == pytest.approx(reliance["score"])
    assert record["report_job_id"] == job["id"]
    assert client.get("/api/checkpoints").json()[0]["verdict"] == reliance["verdict"]
    # the badge follows the latest finished report, also when it is reused from the store
    other = job_waiter(client, client.post(f"/api/checkpoints/{cid}/report", json={"samples": 4, "seed": 1}).json()["id"])
    assert client.get(f"/api/checkpoints/{cid}").json()["report_job_id"] == other["id"]
    reused = client.post(f"/api/checkpoints/{cid}/report", json={"samples": 4}).json()
    assert reused["cached"] is True
    record = client.get(f"/api/checkpoints/{cid}").json()
    assert record["report_job_id"] == reused["id"] and record["verdict"] == reliance["verdict"]


def test_patching_and_gradient_jobs(client, uploaded, job_waiter):
    cid = uploaded["id"]
    patch = client.post(f"/api/checkpoints/{cid}/patching",
                        json={"pairs": 2, "sites": ["controller.output"], "direction": "noise"}).json()
    grads = client.post(f"/api/checkpoints/{cid}/gradients", json={"samples": 2}).json()
    patch, grads = job_waiter(client, patch["id"]), job_waiter(client, grads["id"])
    assert patch["status"] == "done" and grads["status"] == "done", (patch, grads)
    p = patch["result"]["data"]
    assert p["sites"] == ["controller.output"] and p["direction"] == "noise"
    assert len(p["scores"]) == 1 and len(p["scores"][0]) == p["steps"]
    assert {g["name"] for g in grads["result"]["data"]["groups"]} == {"controller", "output"}


def test_identical_queued_job_is_shared_and_cancel_works(client, upload, uploaded, slow_checkpoint,
                                                          long_patching_body, job_waiter, status_waiter):
    slow = upload(slow_checkpoint, "slow.safetensors").json()
    long_job = client.post(f"/api/checkpoints/{slow['id']}/patching", json=long_patching_body).json()
    status_waiter(client, long_job["id"], ("running",))  # the only worker is busy now

    first = client.post(f"/api/checkpoints/{uploaded['id']}/gradients", json={"samples": 2}).json()
    second = client.post(f"/api/checkpoints/{uploaded['id']}/gradients", json={"samples": 2}).json()
    assert first["status"] == "queued" and second["id"] == first["id"]

    cancelled = client.delete(f"/api/jobs/{first['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    running = status_waiter(client, long_job["id"], ("running",))
    assert 0 <= running["progress"] < 1
    stopped = client.delete(f"/api/jobs/{long_job['id']}").json()
    assert stopped["status"] == "cancelled" and stopped["finished_at"]

    # the pool goes on: a new job runs to the end, and the cancelled ones stay cancelled
    after = client.post(f"/api/checkpoints/{uploaded['id']}/gradients", json={"samples": 3}).json()
    assert job_waiter(client, after["id"])["status"] == "done"
    assert client.get(f"/api/jobs/{long_job['id']}").json()["status"] == "cancelled"
    assert client.get(f"/api/jobs/{first['id']}").json()["status"] == "cancelled"
    # cancelling a finished job changes nothing
    again = client.delete(f"/api/jobs/{after['id']}").json()
    assert again["status"] == "done"


@pytest.mark.parametrize("kind, body, fragment", [
    ("ablations", {"specs": [{"sites": ["memory.read"]}]}, "controller.output"),
    ("ablations", {"specs": [{"sites": ["controller.output"], "mode": "scramble"}]}, "mode"),
    ("ablations", {"specs": [{"sites": ["controller.output"], "elements": {"slot": [0]}}]}, "no axis 'slot'"),
    ("ablations", {"specs": [{"sites": ["controller.output"], "elements": {"feature": [99]}}]}, "out of range"),
    ("ablations", {"specs": [{"sites": []}]}, "sites"),
    ("patching", {"sites": ["controller.output"], "per_element": "head"}, "no such axis"),
    ("patching", {"direction": "sideways"}, "direction"),
    ("report", {"samples": 1}, "samples"),
    ("report", {"task": {"name": "mqar"}}, "size"),
    ("gradients", {"samples": 2, "extra": 1}, "extra"),
])
def test_bad_job_requests_are_422(client, uploaded, kind, body, fragment):
    r = client.post(f"/api/checkpoints/{uploaded['id']}/{kind}", json=body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
    assert client.get("/api/jobs").json() == []


def test_unknown_ids_are_404(client):
    for kind in ("ablations", "patching", "gradients", "report"):
        assert client.post(f"/api/checkpoints/0000000000000000/{kind}", json={}).status_code == 404
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.delete("/api/jobs/nope").status_code == 404
    assert client.get("/api/jobs", params={"status": "exploded"}).status_code == 422


def test_deleting_a_checkpoint_removes_its_jobs_and_results(client, uploaded, job_waiter, settings):
    job = client.post(f"/api/checkpoints/{uploaded['id']}/gradients", json={"samples": 2}).json()
    assert job_waiter(client, job["id"])["status"] == "done"
    assert len(list((settings.data_dir / "results").iterdir())) == 1
    assert client.delete(f"/api/checkpoints/{uploaded['id']}").status_code == 204
    assert client.get("/api/jobs").json() == []
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert list((settings.data_dir / "results").iterdir()) == []
    assert client.app.state.store.consistency_problems() == []
