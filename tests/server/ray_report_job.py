"""Run by tests/server/test_remote_jobs.py inside a loopback-only network namespace: a server
whose report jobs go to the Ray cluster at argv[1]; one report on the checkpoint argv[2]; the
finished job (with its result) is written as JSON to argv[3]."""
from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings

REQUEST = {"samples": 4, "seed": 0}


def report(settings: Settings, checkpoint: Path, timeout: float = 300.0) -> dict:
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        ck = client.post("/api/checkpoints", files={"file": (checkpoint.name, io.BytesIO(checkpoint.read_bytes()))})
        assert ck.status_code in (200, 201), ck.text
        job = client.post(f"/api/checkpoints/{ck.json()['id']}/report", json=REQUEST).json()
        deadline = time.monotonic() + timeout
        messages = set()
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)  # a poll loop with a deadline
            job = client.get(f"/api/jobs/{job['id']}").json()
            messages.add(job.get("message"))
        return {**job, "messages": sorted(m for m in messages if m)}


def settings(data_dir: Path, **executor) -> Settings:
    return Settings(data_dir=data_dir, workers=1, dashboard=False, auto_analyze=False, worker_nice=0, **executor)


if __name__ == "__main__":
    address, checkpoint, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        done = report(settings(Path(tmp), executor="ray", ray_address=address), checkpoint)
    out.write_text(json.dumps(done))
