"""The worker pool: a dying worker, the time limit, and what a restart finds."""
from __future__ import annotations

import os
import signal

from fastapi.testclient import TestClient

from mnemoscope.server.app import create_app
from mnemoscope.server.store import Store, now


def _worker_pids(app) -> list[int]:
    return [w.process.pid for w in app.state.jobs._workers]


def test_a_worker_that_dies_fails_its_job_and_is_replaced(client, app, upload, uploaded, slow_checkpoint,
                                                         long_patching_body, status_waiter, job_waiter):
    slow = upload(slow_checkpoint, "slow.safetensors").json()
    job = client.post(f"/api/checkpoints/{slow['id']}/patching", json=long_patching_body).json()
    status_waiter(client, job["id"], ("running",))
    [pid] = _worker_pids(app)
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    failed = job_waiter(client, job["id"])
    assert failed["status"] == "failed" and "died" in failed["error"]
    assert client.get("/api/health").json()["status"] == "ok"
    after = client.post(f"/api/checkpoints/{uploaded['id']}/gradients", json={"samples": 2}).json()
    assert job_waiter(client, after["id"])["status"] == "done"
    assert _worker_pids(app) != [pid]


def test_a_job_over_the_time_limit_is_stopped(settings, checkpoint_bytes, slow_checkpoint, long_patching_body,
                                              job_waiter):
    app = create_app(settings.model_copy(update={"job_timeout_s": 1.0}))
    with TestClient(app) as client:
        slow = client.post("/api/checkpoints", files={"file": ("s.safetensors", slow_checkpoint)}).json()
        job = client.post(f"/api/checkpoints/{slow['id']}/patching", json=long_patching_body).json()
        failed = job_waiter(client, job["id"])
        assert failed["status"] == "failed" and "time limit" in failed["error"]


def test_restart_fails_unfinished_jobs_and_keeps_results(settings, checkpoint_bytes, job_waiter):
    with TestClient(create_app(settings)) as client:
        ck = client.post("/api/checkpoints", files={"file": ("t.safetensors", checkpoint_bytes)}).json()
        done = job_waiter(client, client.post(f"/api/checkpoints/{ck['id']}/gradients", json={"samples": 2}).json()["id"])
        assert done["status"] == "done"
    # a crash leaves a job marked running, a queued one, and a half-written upload behind
    store = Store(settings.data_dir)
    for job_id, status in (("a" * 32, "running"), ("b" * 32, "queued")):
        store.add_job({"id": job_id, "checkpoint_id": ck["id"], "kind": "report", "request": {}, "key": "c" * 64,
                       "status": status, "progress": 0.3, "cached": 0, "created_at": now()})
    store.close()
    (settings.data_dir / "tmp" / "0123.part").write_bytes(b"half an upload")
    (settings.data_dir / "checkpoints" / ("d" * 64 + ".safetensors")).write_bytes(b"renamed, never indexed")

    with TestClient(create_app(settings)) as client:
        for job_id in ("a" * 32, "b" * 32):
            job = client.get(f"/api/jobs/{job_id}").json()
            assert job["status"] == "failed" and "server stopped" in job["error"]
        kept = client.get(f"/api/jobs/{done['id']}").json()
        assert kept["status"] == "done" and kept["result"] == done["result"]
        again = client.post(f"/api/checkpoints/{ck['id']}/gradients", json={"samples": 2}).json()
        assert again["status"] == "done" and again["cached"] is True
        assert [c["id"] for c in client.get("/api/checkpoints").json()] == [ck["id"]]
        assert client.app.state.store.consistency_problems() == []
