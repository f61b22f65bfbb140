"""Server fixtures: tiny checkpoints, an app on a temp data directory, a live `mnemoscope serve`."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from mnemoscope.models import build_model
from mnemoscope.models.checkpoints import save_checkpoint
from mnemoscope.models.tasks import make_task
from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings

TINY_TASK = {"name": "copy", "params": {"bits": 4, "min_length": 2, "max_length": 4}}


def tiny_checkpoint_bytes(tmp: Path, *, seed: int = 0, hidden: int = 8, name: str = "tiny") -> bytes:
    """A valid LSTM checkpoint on a 4-bit copy task; each seed gives different bytes."""
    torch.manual_seed(seed)
    model = build_model("lstm", dict(input_size=5, output_size=4, hidden_size=hidden))
    path = tmp / f"tiny-{seed}-{hidden}-{time.monotonic_ns()}.safetensors"
    save_checkpoint(path, model, task=make_task(TINY_TASK).spec(), name=name, step=seed)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def make_checkpoint(tmp_path):
    def make(seed: int = 0, **kw) -> bytes:
        return tiny_checkpoint_bytes(tmp_path, seed=seed, **kw)

    return make


@pytest.fixture
def checkpoint_bytes(make_checkpoint) -> bytes:
    return make_checkpoint(0)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", workers=1, max_upload_bytes=512 * 1024, dashboard=False,
        cancel_grace_s=1.0, trace_max_samples=8, max_task_param=256, worker_nice=0,
        auto_analyze=False,  # no report job per upload unless a test asks for one
    )


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    with TestClient(app) as c:  # runs the lifespan: workers are stopped at the end
        yield c


@pytest.fixture
def upload(client):
    """POST a checkpoint; returns the response."""

    def post(data: bytes, filename: str = "tiny.safetensors", headers: dict | None = None):
        return client.post("/api/checkpoints", files={"file": (filename, io.BytesIO(data))}, headers=headers or {})

    return post


@pytest.fixture
def uploaded(upload, checkpoint_bytes) -> dict:
    response = upload(checkpoint_bytes)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_job(client, job_id: str, timeout: float = 60.0) -> dict:
    """Poll a job until it leaves queued/running (a poll loop with a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.05)


@pytest.fixture
def job_waiter():
    return wait_for_job


def store_snapshot(data_dir: Path) -> dict:
    """Every file under the data directory except SQLite's journal files, with sizes."""
    out = {}
    for p in sorted(data_dir.rglob("*")):
        if p.is_file() and not p.name.startswith("index.sqlite3"):
            out[str(p.relative_to(data_dir))] = p.stat().st_size
    return out


@pytest.fixture
def snapshot():
    return store_snapshot


# -- a real `mnemoscope serve` ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`mnemoscope serve` in a subprocess; `start()` returns once /api/health answers."""

    def __init__(self, data_dir: Path, log_path: Path, env: dict | None = None, workers: int = 2):
        self.data_dir, self.log_path = data_dir, log_path
        self.env = {**os.environ, "MNEMOSCOPE_DASHBOARD": "false", "MNEMOSCOPE_AUTO_ANALYZE": "false", **(env or {})}
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "LiveServer":
        self.port = free_port()
        cmd = [sys.executable, "-m", "mnemoscope.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir), "--workers", str(self.workers),
               "--log-level", "warning"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server not ready after {timeout}s:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: uvicorn shuts down gracefully, the pool stops its workers
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        code, self.proc = self.proc.returncode, None
        return code


@pytest.fixture
def live_server_factory(tmp_path):
    servers: list[LiveServer] = []

    def make(**kw) -> LiveServer:
        server = LiveServer(tmp_path / "live-data", tmp_path / "server.log", **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# -- a job that runs for a long time (to cancel, time out or crash it) ----------------------------

LONG_TASK = {"params": {"min_length": 200, "max_length": 200}}  # T = 401


@pytest.fixture
def slow_checkpoint(make_checkpoint) -> bytes:
    return make_checkpoint(5, hidden=128)


@pytest.fixture
def long_patching_body() -> dict:
    """Patching every step of two sites of a 128-unit LSTM over 401 steps: tens of seconds
    of work in small chunks (a progress call after each), in a few MB of memory."""
    return {"task": LONG_TASK, "pairs": 8, "sites": ["controller.output", "controller.cell"], "memory_budget_mb": 16}


def wait_for_status(client, job_id: str, statuses, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached {statuses}: {job}")
        time.sleep(0.05)


@pytest.fixture
def status_waiter():
    return wait_for_status
