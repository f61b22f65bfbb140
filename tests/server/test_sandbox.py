"""The sandbox processes (server/sandbox.py): confined, killed at the time limit, refused
above the answer size, replaced when they die, run out of memory or keep what a call took,
and never more callers waiting than allowed."""
from __future__ import annotations

import importlib
import json
import threading
import time
from pathlib import Path

import pytest

from mnemoscope.server.errors import Invalid, Unavailable
from mnemoscope.server.limits import rss_bytes
from mnemoscope.server.sandbox import AnswerTooLarge, CallTimeout, OutOfMemory, Sandbox, WorkerDied
from mnemoscope.server.settings import Settings

MiB = 1 << 20


@pytest.fixture
def handlers(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return importlib.import_module("sandbox_handlers").HANDLERS


@pytest.fixture
def sandbox_settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", dashboard=False, trace_workers=1, trace_queue=0,
                    worker_memory_mb=512, worker_recycle_mb=64, worker_nice=3)


@pytest.fixture
def sandbox(sandbox_settings, handlers):
    box = Sandbox(sandbox_settings, handlers)
    yield box
    box.shutdown()


def call(box: Sandbox, op: str, timeout_s: float = 60, max_bytes: int = MiB, **kwargs) -> dict:
    return json.loads(box.call(op, timeout_s=timeout_s, max_bytes=max_bytes, **kwargs))


def test_a_sandbox_process_is_confined_before_it_runs_anything(sandbox, sandbox_settings):
    me = call(sandbox, "whoami")
    limit = sandbox_settings.worker_memory_mb * MiB
    assert me["rlimit_data"] == [limit, limit]  # RLIMIT_DATA, so CUDA may still reserve address space
    assert me["oom_score_adj"] == 500  # the kernel kills it before the server
    assert me["nice"] >= sandbox_settings.worker_nice
    assert call(sandbox, "whoami")["pid"] == me["pid"]  # one process serves call after call


def test_a_call_past_its_time_limit_is_stopped_and_the_process_replaced(sandbox):
    first = call(sandbox, "whoami")["pid"]
    t0 = time.monotonic()
    with pytest.raises(CallTimeout):
        sandbox.call("sleep", timeout_s=0.5, max_bytes=MiB, seconds=60)
    assert time.monotonic() - t0 < 5
    assert not Path(f"/proc/{first}").exists() or "zombie" in Path(f"/proc/{first}/status").read_text()
    assert call(sandbox, "whoami")["pid"] != first


def test_running_out_of_memory_fails_the_call_not_the_server(sandbox, sandbox_settings):
    before = rss_bytes()
    with pytest.raises(OutOfMemory):
        sandbox.call("allocate", timeout_s=60, max_bytes=MiB, mb=2 * sandbox_settings.worker_memory_mb)
    assert rss_bytes() - before < 100 * MiB  # nothing of it in this process
    assert call(sandbox, "allocate", mb=16)["sum"] == 16 * 2**18


def test_an_answer_over_the_size_limit_is_refused(sandbox):
    with pytest.raises(AnswerTooLarge) as err:
        sandbox.call("answer", timeout_s=60, max_bytes=MiB, size=2 * MiB)
    assert err.value.size == 2 * MiB
    assert sandbox.call("answer", timeout_s=60, max_bytes=MiB, size=MiB) == b"x" * MiB


def test_a_handlers_service_error_comes_back_as_it_was(sandbox):
    with pytest.raises(Invalid) as err:
        sandbox.call("refuse", timeout_s=60, max_bytes=MiB, reason="not this one")
    assert err.value.message == "not this one" and err.value.extra == {"budget": {"limit": "test"}}


def test_a_process_that_dies_is_replaced(sandbox):
    first = call(sandbox, "whoami")["pid"]
    with pytest.raises(WorkerDied):
        sandbox.call("crash", timeout_s=60, max_bytes=MiB)
    assert call(sandbox, "whoami")["pid"] != first


def test_a_process_that_kept_memory_is_replaced_so_the_memory_is_returned(sandbox, sandbox_settings):
    idle = call(sandbox, "whoami")["pid"]
    idle_rss = rss_bytes(idle)
    small = call(sandbox, "hold", mb=8)["pid"]
    assert small == idle  # under worker_recycle_mb: kept, with its cache
    grown = call(sandbox, "hold", mb=sandbox_settings.worker_recycle_mb + 64)["pid"]
    assert grown == idle
    assert not Path(f"/proc/{grown}").exists() or rss_bytes(grown) == 0  # stopped after its answer
    fresh = call(sandbox, "whoami")["pid"]
    assert fresh != grown and rss_bytes(fresh) < idle_rss + 64 * MiB


def test_callers_beyond_the_queue_are_refused_at_once(sandbox, tmp_path):
    started = tmp_path / "started"
    busy = threading.Thread(target=lambda: sandbox.call("sleep", timeout_s=60, max_bytes=MiB, seconds=3,
                                                        started=str(started)))
    busy.start()
    deadline = time.monotonic() + 60
    while not started.exists():  # the one process is now running the long call
        assert time.monotonic() < deadline, "the sandbox never started the call"
        time.sleep(0.01)
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as err:
        sandbox.call("whoami", timeout_s=60, max_bytes=MiB)
    assert time.monotonic() - t0 < 0.5
    assert "busy" in err.value.message and err.value.headers["Retry-After"]
    busy.join()
    assert call(sandbox, "whoami")["pid"]
