"""Dashboard fixtures: a fake API client for callback logic, and for the browser tests a
real `mnemoscope serve` on a free port with tiny checkpoints, plus headless Chromium."""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemoscope.dashboard.api import ApiError

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("MNEMOSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

TINY_TASK = {"name": "copy", "params": {"bits": 4, "min_length": 3, "max_length": 5}}
NTM_SLOTS = 6
NTM_CONFIG = {"input_size": 5, "output_size": 4, "controller_size": 12, "memory_slots": NTM_SLOTS, "memory_width": 5}
DNC_CONFIG = {"input_size": 5, "output_size": 4, "controller_size": 12, "memory_slots": 7, "memory_width": 5}


# -- a fake API for callback logic -------------------------------------------------------------

def _limits(**fields):
    return {name: {"minimum": lo, "maximum": hi, "default": default} for name, (lo, hi, default) in fields.items()}


SEED_LIMITS = (0, 2**31 - 1, 0)
# what GET /api/kinds answers (the server's request models and settings)
KINDS = [
    {"name": "ablations", "summary": "ablate sites", "route": "/api/checkpoints/{checkpoint_id}/ablations",
     "method": "POST", "limits": _limits(samples=(1, 512, 32), seed=SEED_LIMITS), "task_param_max": 4096},
    {"name": "patching", "summary": "patch sites", "route": "/api/checkpoints/{checkpoint_id}/patching",
     "method": "POST", "limits": _limits(pairs=(1, 256, 8), seed=SEED_LIMITS, memory_budget_mb=(16, 16384, 512)),
     "task_param_max": 4096},
    {"name": "gradients", "summary": "gradient flow", "route": "/api/checkpoints/{checkpoint_id}/gradients",
     "method": "POST", "limits": _limits(samples=(1, 512, 16), seed=SEED_LIMITS), "task_param_max": 4096},
    {"name": "report", "summary": "the full report", "route": "/api/checkpoints/{checkpoint_id}/report",
     "method": "POST", "limits": _limits(samples=(2, 512, 32), seed=SEED_LIMITS), "task_param_max": 4096},
    {"name": "trace", "summary": "one traced sample", "route": "/api/checkpoints/{checkpoint_id}/trace",
     "method": "POST", "limits": _limits(samples=(1, 16, 1), seed=SEED_LIMITS), "task_param_max": 4096},
]


class FakeApi:
    """Stands in for `ApiClient`: canned answers, every call recorded, chosen calls failing.

    jobs: job id -> list of states returned by successive `job()` calls, or by `jobs()`
    for each started job it lists (the last state repeats).
    kinds: what `kinds()` answers (default KINDS).
    fail: method name -> message; that method raises ApiError(message).
    """

    def __init__(self, *, checkpoints=None, sites=None, trace=None, jobs=None, kinds=None, fail=None):
        self._checkpoints = list(checkpoints or [])
        self._sites = sites or {}
        self._trace = trace
        self._jobs: dict[str, list[dict]] = {k: list(v) for k, v in (jobs or {}).items()}
        self._kinds = copy.deepcopy(KINDS if kinds is None else kinds)
        self.fail = dict(fail or {})
        self.calls: list[tuple] = []
        self.started: list[tuple[str, str, dict]] = []

    def kinds(self):
        self._call("kinds")
        return copy.deepcopy(self._kinds)

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if name in self.fail:
            raise ApiError(self.fail[name], 422)

    def checkpoints(self):
        self._call("checkpoints")
        return copy.deepcopy(self._checkpoints)

    def checkpoint(self, cid):
        self._call("checkpoint", cid)
        for c in self._checkpoints:
            if c["id"] == cid:
                return copy.deepcopy(c)
        raise ApiError(f"no checkpoint with id {cid!r} (HTTP 404)", 404)

    def sites(self, cid):
        self._call("sites", cid)
        return copy.deepcopy(self._sites.get(cid, []))

    def trace(self, cid, **kwargs):
        self._call("trace", cid, kwargs)
        trace = self._trace(cid, **kwargs) if callable(self._trace) else self._trace
        return copy.deepcopy(trace)

    def delete_checkpoint(self, cid):
        self._call("delete_checkpoint", cid)
        self._checkpoints = [c for c in self._checkpoints if c["id"] != cid]

    def start_job(self, cid, kind, body=None):
        self._call("start_job", cid, kind, body)
        job_id = f"{kind}-{cid}"
        self.started.append((cid, kind, dict(body or {})))
        states = self._jobs.setdefault(job_id, [{"status": "done", "progress": 1.0,
                                                 "result": {"kind": kind, "data": {}}}])
        state = states.pop(0) if len(states) > 1 else states[0]  # polls continue from the next state
        first = {k: v for k, v in state.items() if k != "result"}
        return {"id": job_id, "kind": kind, "checkpoint_id": cid, **first}

    def start_report(self, cid, body=None):
        return self.start_job(cid, "report", body)

    def job(self, job_id):
        self._call("job", job_id)
        states = self._jobs.get(job_id)
        if states is None:
            raise ApiError(f"no job with id {job_id!r} (HTTP 404)", 404)
        return self._next_state(job_id)

    def jobs(self, **filters):
        """The started jobs matching the filters, newest first, each at its next state
        and without its result (as GET /api/jobs lists them)."""
        self._call("jobs", filters)
        ids = list(dict.fromkeys(f"{kind}-{cid}" for cid, kind, _ in self.started))[::-1]
        listed = [self._next_state(job_id) for job_id in ids
                  if all(self._describe(job_id)[k] == v for k, v in filters.items() if k in ("kind", "checkpoint_id"))]
        return [{k: v for k, v in job.items() if k != "result"} for job in listed]

    @staticmethod
    def _describe(job_id):
        kind, _, cid = job_id.partition("-")
        return {"id": job_id, "kind": kind, "checkpoint_id": cid}

    def _next_state(self, job_id):
        states = self._jobs[job_id]
        state = states.pop(0) if len(states) > 1 else states[0]
        return {**self._describe(job_id), **copy.deepcopy(state)}


@pytest.fixture
def fake_api():
    return FakeApi


def labelled(data: Any, axes: list[str]) -> dict:
    def shape(x):
        return [len(x), *shape(x[0])] if isinstance(x, list) and x else []
    return {"axes": axes, "shape": shape(data), "data": data}


# -- a live server and a browser ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoints(folder: Path) -> dict[str, Path]:
    """Tiny NTM and DNC checkpoints on a 4-bit copy task (fresh weights: the dashboard
    shows whatever they do)."""
    import torch

    from mnemoscope.models import build_model
    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.tasks import make_task

    torch.manual_seed(0)
    task = make_task(TINY_TASK)
    out = {}
    for key, arch, config in (("ntm", "ntm", NTM_CONFIG), ("dnc", "dnc", DNC_CONFIG), ("spare", "ntm", NTM_CONFIG)):
        model = build_model(arch, config)  # "spare": another NTM, for deleting
        out[key] = save_checkpoint(folder / f"tiny-{key}.safetensors", model, task=task, step=10,
                                   name=f"tiny-{key}")
    return out


@pytest.fixture(scope="session")
def checkpoint_files(tmp_path_factory) -> dict[str, Path]:
    return make_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """`mnemoscope serve` on a free port with a temporary data directory; its base URL."""
    data = tmp_path_factory.mktemp("server-data")
    port = free_port()
    env = dict(os.environ, MNEMOSCOPE_LOG_LEVEL="warning", PYTHONUNBUFFERED="1", MNEMOSCOPE_WORKER_NICE="0")
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemoscope.cli", "serve", "--port", str(port), "--data-dir", str(data / "store"),
         "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mnemoscope serve exited with {proc.returncode}: {(data / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mnemoscope serve did not answer /api/health within 90 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def uploaded(live_server, checkpoint_files) -> dict[str, dict]:
    """Both tiny checkpoints stored on the live server (through the API)."""
    out = {}
    for arch, path in checkpoint_files.items():
        if arch == "spare":
            continue
        with open(path, "rb") as f:
            r = httpx.post(f"{live_server}/api/checkpoints", files={"file": (path.name, f)}, timeout=60)
        assert r.status_code in (200, 201), r.text
        out[arch] = r.json()
    return out


@pytest.fixture(scope="session")
def browser():
    # a missing browser is a failure, not a skip: CI installs Debian's chromium
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A 1280x800 page that fails the test on any uncaught page error."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    p = context.new_page()
    p.set_default_timeout(30_000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.errors = errors
    yield p
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def screenshot():
    """screenshot(page, name): the whole page to test-artifacts/<name>.png."""
    def shoot(page, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot
