"""The budget (server/budget.py): every trace and job request is priced from its task's
sequence length, its rows, its recorded sites and the model's size before anything runs,
and refused with a 422 naming the limit and what to lower; GET /api/kinds shows the limits;
a full job queue is a 429 with Retry-After."""
from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mnemoscope.dashboard.api import describe_error
from mnemoscope.models.tasks import make_task
from mnemoscope.server import budget
from mnemoscope.server.app import create_app
from mnemoscope.server.kinds import KINDS
from mnemoscope.server.settings import Settings

ZOO = Path(__file__).resolve().parents[2] / "mnemoscope" / "zoo"
NTM = "ntm-copy-small-controller.safetensors"  # copy, input 9, output 8: fits repeat_copy with bits=7
DELTANET = "mqar-deltanet.safetensors"  # two memory layers, each with a T x T memory.attention site
# the findings of the issue, each one trace request
REPEAT_COPY_220 = {"task": {"name": "repeat_copy", "params": {"bits": 7, "min_length": 220, "max_length": 220,
                                                                "min_repeats": 220, "max_repeats": 220}},
                   "samples": 16}
MQAR_512_ATTENTION = {"task": {"params": {"seq_len": 512}}, "samples": 16,
                      "sites": ["layers.0.memory.attention", "layers.2.memory.attention"]}
MQAR_4096 = {"task": {"params": {"seq_len": 4096}}, "samples": 16}


@pytest.fixture
def budget_settings(tmp_path) -> Settings:
    """The defaults, as a server started without options has them (no report queued on upload,
    so the jobs listed are the test's own)."""
    return Settings(data_dir=tmp_path / "data", dashboard=False, workers=1, worker_nice=0, auto_analyze=False)


@pytest.fixture
def budget_client(budget_settings):
    with TestClient(create_app(budget_settings)) as client:
        yield client


def upload_zoo(client, name: str) -> str:
    r = client.post("/api/checkpoints", files={"file": (name, io.BytesIO((ZOO / name).read_bytes()))})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


@pytest.mark.parametrize("spec, steps", [
    ({"name": "copy", "params": {"min_length": 7, "max_length": 7}}, 15),
    ({"name": "repeat_copy", "params": {"min_length": 3, "max_length": 3, "min_repeats": 4, "max_repeats": 4}}, 17),
    ({"name": "associative_recall", "params": {"min_items": 5, "max_items": 5, "item_length": 2}}, 21),
    ({"name": "mqar", "params": {"seq_len": 96}}, 96),
])
def test_steps_come_from_the_task_as_a_whole_and_match_what_it_samples(spec, steps):
    task = make_task(spec)
    assert budget.task_steps(task) == steps == task.sample(1, 0).mask.shape[1]


def test_a_range_is_priced_at_its_longest_sequence():
    task = make_task({"name": "repeat_copy", "params": {"max_length": 220, "max_repeats": 220}})
    assert budget.task_steps(task) == 220 + 1 + 220 * 220 + 1


@pytest.mark.parametrize("name, body, limit, value", [
    (NTM, REPEAT_COPY_220, "max_steps", 48622),
    (DELTANET, MQAR_512_ATTENTION, "trace_max_bytes", None),
    (DELTANET, MQAR_4096, "trace_max_bytes", None),  # within max_steps (4096), not in full
])
def test_the_issues_traces_are_refused_at_once_with_what_to_lower(budget_client, budget_settings, name, body,
                                                                  limit, value):
    cid = upload_zoo(budget_client, name)
    t0 = time.perf_counter()
    r = budget_client.post(f"/api/checkpoints/{cid}/trace", json=body)
    assert time.perf_counter() - t0 < 1.0
    assert r.status_code == 422, r.text
    got = r.json()["budget"]
    assert got["limit"] == limit and got["maximum"] == getattr(budget_settings, limit)
    assert got["value"] > got["maximum"] and (value is None or got["value"] == value)
    assert "task.params" in got["lower"]
    assert limit in r.json()["detail"] and f"MNEMOSCOPE_{limit.upper()}" in r.json()["detail"]


def test_a_t_by_t_site_is_priced_by_the_square_of_the_sequence(budget_client):
    cid = upload_zoo(budget_client, DELTANET)
    record = budget_client.app.state.store.get_checkpoint(cid)
    task = make_task({"name": "mqar", "params": {"seq_len": 128}})
    plain = budget.estimate_trace(record, task, 1, ["layers.0.memory.read"])
    square = budget.estimate_trace(record, task, 1, ["layers.0.memory.attention"])
    heads = 4  # mqar-deltanet: layers.0.memory.attention is [head, key] per step, key as long as the sequence
    assert square.values - plain.values == 128 * (heads * 128 - heads * 8)


@pytest.mark.parametrize("name, body", [
    (NTM, {"sites": ["*"], "samples": 4}),
    (DELTANET, {"task": {"params": {"seq_len": 96}}, "sites": ["*", "layers.0.memory.attention"], "samples": 3}),
])
def test_an_answer_is_never_larger_than_its_estimate(budget_client, budget_settings, name, body):
    cid = upload_zoo(budget_client, name)
    r = budget_client.post(f"/api/checkpoints/{cid}/trace", json=body)
    assert r.status_code == 200, r.text
    record = budget_client.app.state.store.get_checkpoint(cid)
    task = make_task(r.json()["task"])
    estimate = budget.estimate_trace(record, task, body["samples"], list(r.json()["sites"]))
    assert len(r.content) <= estimate.bytes <= 2 * len(r.content)


def test_an_answer_larger_than_the_limit_is_refused_after_it_was_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BYTES_PER_VALUE", 1)  # an estimate that is wrong for once
    settings = Settings(data_dir=tmp_path / "data", dashboard=False, workers=1, trace_max_bytes=100_000,
                        auto_analyze=False)
    with TestClient(create_app(settings)) as client:
        cid = upload_zoo(client, NTM)
        r = client.post(f"/api/checkpoints/{cid}/trace", json={"sites": ["*"], "samples": 8})
        assert r.status_code == 422, r.text
        got = r.json()["budget"]
        assert got["limit"] == "trace_max_bytes" and got["value"] > 100_000 and got["maximum"] == 100_000
        assert client.post(f"/api/checkpoints/{cid}/trace", json={}).status_code == 200  # the sandbox lives on


def test_jobs_over_the_budget_are_refused_before_they_are_queued(budget_client, budget_settings):
    cid = upload_zoo(budget_client, "ntm-copy-big-controller.safetensors")  # 295548 parameters
    long_copy = {"params": {"min_length": 500, "max_length": 500}}  # T = 1001, within max_steps
    cases = [
        ("patching", {"pairs": 64, "per_element": "slot", "task": long_copy}, "job_max_work", "per_element"),
        ("gradients", {"samples": 512, "task": long_copy}, "job_max_values", "samples"),
        ("ablations", {"task": {"params": {"max_length": 2100}}}, "max_steps", "task.params"),
    ]
    for kind, body, limit, lower in cases:
        r = budget_client.post(f"/api/checkpoints/{cid}/{kind}", json=body)
        assert r.status_code == 422, (kind, r.text)
        got = r.json()["budget"]
        assert got["limit"] == limit and got["value"] > got["maximum"] == getattr(budget_settings, limit)
        assert lower in got["lower"], (kind, got)
    assert budget_client.get("/api/jobs").json() == []  # nothing stored, nothing queued


def test_patching_is_priced_per_site_step_and_element():
    kind = KINDS["patching"]
    record = {"sites": [{"name": "memory.read_weights", "kind": "read_weights", "shape": [1, 16],
                         "axes": ["head", "slot"], "on_request": False, "distribution": True, "memory": True,
                         "doc": ""}], "parameters": 1000}
    request = {"task": {"name": "copy", "params": {"min_length": 10, "max_length": 10}}, "seed": 0, "pairs": 8,
               "sites": ["memory.read_weights"], "direction": "denoise", "per_element": None, "memory_budget_mb": 512}
    whole, _ = budget.estimate_job(kind, record, request)
    per_slot, lower = budget.estimate_job(kind, record, {**request, "per_element": "slot"})
    assert whole.steps == 21 and whole.rows == 8
    assert whole.work == 8 * (2 + 21) * 21 * 1000 and per_slot.work == 8 * (2 + 21 * 16) * 21 * 1000
    assert {"pairs", "sites", "per_element"} <= set(lower)


def test_kinds_show_the_budget_each_request_is_held_to(budget_client, budget_settings):
    entries = {e["name"]: e for e in budget_client.get("/api/kinds").json()}
    trace = entries.pop("trace")["budget"]
    assert trace == {name: getattr(budget_settings, name) for name in (
        "max_steps", "trace_max_bytes", "trace_max_work", "worker_memory_mb", "trace_timeout_s", "trace_max_samples")}
    for entry in entries.values():
        assert entry["budget"] == {name: getattr(budget_settings, name) for name in (
            "max_steps", "job_max_values", "job_max_work", "worker_memory_mb", "job_timeout_s", "max_queued_jobs")}


def test_a_full_queue_is_a_429_with_retry_after(tmp_path, make_checkpoint, long_patching_body):
    settings = Settings(data_dir=tmp_path / "data", dashboard=False, workers=1, worker_nice=0, max_queued_jobs=3,
                        auto_analyze=False)
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/checkpoints", files={"file": ("slow.safetensors", make_checkpoint(5, hidden=128))})
        cid = r.json()["id"]
        accepted, refused = [], None
        for seed in range(8):  # distinct requests, each tens of seconds long
            r = client.post(f"/api/checkpoints/{cid}/patching", json={**long_patching_body, "seed": seed})
            if r.status_code == 429:
                refused = r
                break
            assert r.status_code == 202, r.text
            accepted.append(r.json()["id"])
        assert refused is not None and 3 <= len(accepted) <= 3 + settings.workers
        assert int(refused.headers["Retry-After"]) > 0 and "queue is full" in refused.json()["detail"]
        assert len(client.get("/api/jobs").json()) == len(accepted)  # the refused one left no row
        for job_id in accepted:
            client.delete(f"/api/jobs/{job_id}")


def test_the_dashboard_says_a_429_as_a_sentence():
    assert describe_error(429, {}) == "the server's job queue is full; try again in a minute (HTTP 429)"
    detail = "the job queue is full (64 jobs are waiting for a worker); try again in 30 s"
    assert describe_error(429, {"detail": detail}) == f"{detail} (HTTP 429)"
