"""A real `mnemoscope serve` subprocess: the whole path across a restart, and 20 clients at once."""
from __future__ import annotations

import random
import signal
import threading
import time

import httpx
import pytest

from mnemoscope.server.store import Store

pytestmark = pytest.mark.slow
# uvicorn shuts down cleanly on SIGTERM, then re-raises the signal for the default exit status
GRACEFUL = (0, -signal.SIGTERM)


def _poll(c: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/api/jobs/{job_id}").raise_for_status().json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.1)


def test_upload_trace_jobs_restart(live_server_factory, checkpoint_bytes):
    server = live_server_factory(workers=2).start()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/api/checkpoints", files={"file": ("tiny.safetensors", checkpoint_bytes)})
        assert r.status_code == 201, r.text
        ck = r.json()

        trace = c.post(f"/api/checkpoints/{ck['id']}/trace", json={"seed": 3, "sites": ["*"]})
        assert trace.status_code == 200 and "controller.output" in trace.json()["sites"]

        ablation = c.post(f"/api/checkpoints/{ck['id']}/ablations",
                          json={"samples": 4, "specs": [{"sites": ["controller.output"], "mode": "zero"}]})
        assert ablation.status_code == 202
        ablation = _poll(c, ablation.json()["id"])
        assert ablation["status"] == "done", ablation

        report = c.post(f"/api/checkpoints/{ck['id']}/report", json={"samples": 4})
        assert report.status_code == 202
        report = _poll(c, report.json()["id"])
        assert report["status"] == "done", report
        verdict = report["result"]["data"]["reliance"]["verdict"]
        assert c.get(f"/api/checkpoints/{ck['id']}").json()["verdict"] == verdict

    assert server.stop() in GRACEFUL
    assert Store(server.data_dir).consistency_problems() == []

    server.start()  # same data directory, a new process and port
    with httpx.Client(base_url=server.url, timeout=60) as c:
        again = c.get(f"/api/checkpoints/{ck['id']}").json()
        assert again == {**ck, "verdict": verdict, "reliance_score": again["reliance_score"],
                         "report_job_id": report["id"]}
        assert c.get(f"/api/checkpoints/{ck['id']}/file").content == checkpoint_bytes
        for job in (ablation, report):
            kept = c.get(f"/api/jobs/{job['id']}").json()
            assert kept["status"] == "done" and kept["result"] == job["result"]
        reused = c.post(f"/api/checkpoints/{ck['id']}/ablations",
                        json={"samples": 4, "specs": [{"sites": ["controller.output"], "mode": "zero"}]}).json()
        assert reused["status"] == "done" and reused["cached"] is True
        assert c.post(f"/api/checkpoints/{ck['id']}/trace", json={"seed": 3, "sites": ["*"]}).json() == trace.json()


def test_twenty_concurrent_clients(live_server_factory, make_checkpoint):
    shared = make_checkpoint(1000)  # every client uploads these same bytes too: one record must result
    own = [make_checkpoint(2000 + i) for i in range(20)]
    server = live_server_factory(workers=2).start()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        base = c.post("/api/checkpoints", files={"file": ("base.safetensors", make_checkpoint(999))}).json()

    errors: list[str] = []
    start = threading.Barrier(20)

    def expect(r: httpx.Response, *codes: int) -> dict | None:
        if r.status_code not in codes:
            errors.append(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}")
            return None
        return r.json() if r.content else None

    def client(i: int) -> None:
        rnd = random.Random(i)
        try:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                start.wait()
                mine = expect(c.post("/api/checkpoints", files={"file": (f"c{i}.safetensors", own[i])}), 201)
                expect(c.post("/api/checkpoints", files={"file": ("shared.safetensors", shared)}), 200, 201)
                for _ in range(3):
                    target = rnd.choice([base["id"], mine["id"]]) if mine else base["id"]
                    expect(c.post(f"/api/checkpoints/{target}/trace",
                                  json={"seed": rnd.randrange(100), "samples": 2, "sites": ["*"]}), 200)
                kind, body = rnd.choice([("gradients", {"samples": 2}), ("ablations", {"samples": 2}),
                                         ("patching", {"pairs": 2, "sites": ["controller.output"]})])
                # half the clients ask for the same job on the shared base checkpoint (dedupe/reuse)
                target = base["id"] if i % 2 else mine["id"]
                job = expect(c.post(f"/api/checkpoints/{target}/{kind}", json={**body, "seed": i % 3}), 202)
                if job:
                    done = _poll(c, job["id"])
                    if done["status"] != "done":
                        errors.append(f"job {kind}: {done['status']} {done['error']}")
                expect(c.get("/api/checkpoints"), 200)
                expect(c.get("/api/jobs"), 200)
                if i % 4 == 0 and mine:
                    expect(c.delete(f"/api/checkpoints/{mine['id']}"), 204)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert errors == [], '\n'.join(errors)

    with httpx.Client(base_url=server.url, timeout=60) as c:
        listed = {x["id"] for x in c.get("/api/checkpoints").json()}
    assert len(listed) == 1 + 1 + 20 - 5  # base, shared, own uploads minus the five deleted
    assert server.stop() in GRACEFUL
    store = Store(server.data_dir)
    assert store.consistency_problems() == []
    assert {r["id"] for r in store.list_checkpoints()} == listed
