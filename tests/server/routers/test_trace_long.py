"""Long traces: `reduce: {max_points}` max-pools time (and slot/key axes) into bins, `window:
[t0, t1]` answers a slice; both priced as answered, validated, and served from the
sandbox's cached forward when the same trace is zoomed into."""
from __future__ import annotations

import io

import pytest
import torch

from mnemoscope.models import build_model
from mnemoscope.models.checkpoints import save_checkpoint
from mnemoscope.models.tasks import make_task
from mnemoscope.server import reduction
from mnemoscope.server.services import trace as trace_service
from mnemoscope.server.services.isolated import _OneCheckpoint
from mnemoscope.server.services.models import ModelCache
from mnemoscope.server.settings import Settings

SLOTS = 40
LONG = {"params": {"min_length": 100, "max_length": 100}}  # copy: T = 201


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", workers=1, dashboard=False, worker_nice=0, auto_analyze=False,
                    trace_max_bytes=400_000)


@pytest.fixture
def ntm(client, tmp_path) -> dict:
    torch.manual_seed(0)
    model = build_model("ntm", {"input_size": 5, "output_size": 4, "controller_size": 16, "memory_slots": SLOTS,
                                "memory_width": 6})
    path = save_checkpoint(tmp_path / "ntm.safetensors", model,
                           task=make_task({"name": "copy", "params": {"bits": 4}}).spec())
    r = client.post("/api/checkpoints", files={"file": ("ntm.safetensors", io.BytesIO(path.read_bytes()))})
    assert r.status_code == 201, r.text
    return r.json()


def post(client, ntm, **body):
    return client.post(f"/api/checkpoints/{ntm['id']}/trace", json={"task": LONG, **body})


# -- pooling ---------------------------------------------------------------------------------

def test_max_pooling_keeps_a_single_sharp_peak():
    weights = torch.full((1, 4096, 1, 128), 1 / 128)
    weights[0, 3001, 0] = 0.0
    weights[0, 3001, 0, 77] = 1.0  # one sharp read in 4096 steps
    pooled, bins = reduction.reduce_labelled(weights, ["batch", "time", "head", "slot"], "max", None, 512)
    assert pooled.shape == (1, 512, 1, 128) and bins == {}
    assert pooled.max() == 1.0 and pooled[0, 3001 // 8, 0].argmax() == 77
    assert reduction.bin_edges(0, 4096, 512)[375:377] == [3000, 3008]


def test_signed_values_keep_the_largest_magnitude_with_its_sign_and_skip_missing():
    x = torch.tensor([[0.5, -2.0, 1.0, float("nan"), float("nan"), 0.25, 3.0]])
    assert reduction.pool(x, 1, 3, "absmax").tolist() == [[-2.0, 0.25, 3.0]]
    assert reduction.pool(x, 1, 3, "min").tolist() == [[-2.0, 0.25, 3.0]]
    nan_bin = reduction.pool(torch.tensor([[1.0, float("nan"), float("nan")]]), 1, 2, "max")
    assert nan_bin[0, 0] == 1.0 and nan_bin[0, 1].isnan()
    assert reduction.pool(torch.tensor([[True, False, False, False]]), 1, 2, "max").tolist() == [[True, False]]
    assert reduction.bin_edges(10, 20, 4) == [10, 13, 16, 19, 20] and reduction.bin_edges(0, 5, 16) == list(range(6))


# -- the route --------------------------------------------------------------------------------

def test_a_reduced_trace_is_the_max_pool_of_the_full_one_with_its_edges(client, ntm):
    full = post(client, ntm, sites=["memory.read_weights"]).json()
    small = post(client, ntm, sites=["memory.read_weights"], reduce={"max_points": 16}).json()
    assert full["time"] == {"length": 201, "window": [0, 201], "bin": 1, "edges": list(range(202))}
    assert small["time"]["length"] == 201 and small["time"]["bin"] == 13
    assert small["time"]["edges"] == [*range(0, 201, 13), 201] and len(small["time"]["edges"]) == 17
    site = small["sites"]["memory.read_weights"]
    assert site["shape"] == [1, 16, 1, 14] and site["bins"] == {"slot": [*range(0, 40, 3), 40]}
    w = torch.tensor(full["sites"]["memory.read_weights"]["data"])
    expected = reduction.pool(reduction.pool(w, 1, 13, "max"), 3, 3, "max")
    assert torch.allclose(torch.tensor(site["data"]), expected, atol=1e-6)
    # entropy keeps the sharpest step of a bin, the mask any scored step
    h = torch.tensor(full["sites"]["memory.read_weights"]["entropy"]["data"])
    assert torch.allclose(torch.tensor(site["entropy"]["data"]), reduction.pool(h, 1, 13, "min"), atol=1e-6)
    assert small["mask"]["shape"] == [1, 16] and small["mask"]["data"][0][8:] == [True] * 8
    assert small["summary"] == full["summary"]  # the whole sequence's, whatever is answered
    assert len(small["inputs"]["data"][0]) == 16 and "bins" not in small["inputs"]


def test_a_window_is_the_slice_of_the_full_trace(client, ntm):
    full = post(client, ntm, sites=["memory.write_weights"]).json()
    part = post(client, ntm, sites=["memory.write_weights"], window=[150, 180]).json()
    assert part["time"] == {"length": 201, "window": [150, 180], "bin": 1, "edges": list(range(150, 181))}
    for key in ("inputs", "outputs", "loss", "mask", "metric_scored"):
        assert part[key]["data"][0] == full[key]["data"][0][150:180], key
    site = "memory.write_weights"
    assert part["sites"][site]["data"][0] == full["sites"][site]["data"][0][150:180]
    assert part["sites"][site]["entropy"]["data"][0] == full["sites"][site]["entropy"]["data"][0][150:180]
    both = post(client, ntm, sites=["memory.read_weights"], window=[100, 201], reduce={"max_points": 20}).json()
    assert both["time"]["edges"] == [*range(100, 201, 6), 201] and both["sites"]["memory.read_weights"]["shape"][1] == 17


@pytest.mark.parametrize("body, fragment", [
    ({"window": [5, 3]}, "0 <= t0 < t1"),
    ({"window": [-1, 3]}, "0 <= t0 < t1"),
    ({"window": [0, 202]}, "within the sequence's 201 steps"),
    ({"window": [1]}, "window"),
    ({"reduce": {"max_points": 4}}, "max_points"),
    ({"reduce": {"max_points": 100_000}}, "max_points"),
    ({"reduce": {}}, "max_points"),
])
def test_bad_windows_and_reductions_are_422_with_a_reason(client, ntm, body, fragment):
    r = post(client, ntm, **body)
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_a_trace_too_big_in_full_is_allowed_reduced(client, ntm):
    full = post(client, ntm, sites=["*"])
    assert full.status_code == 422 and full.json()["budget"]["limit"] == "trace_max_bytes"
    assert {"reduce", "window"} <= set(full.json()["budget"]["lower"])
    reduced = post(client, ntm, sites=["*"], reduce={"max_points": 32})
    assert reduced.status_code == 200, reduced.text
    assert len(reduced.content) < 400_000
    assert post(client, ntm, sites=["*"], window=[0, 40]).status_code == 200


def test_zooming_into_the_same_trace_reuses_its_forward(client, ntm, monkeypatch):
    record = client.app.state.store.get_checkpoint(ntm["id"])
    store = _OneCheckpoint(record, str(client.app.state.store.checkpoint_path(record)))
    forwards = []
    real = trace_service._forward
    monkeypatch.setattr(trace_service, "_forward", lambda *a: forwards.append(1) or real(*a))
    monkeypatch.setattr(trace_service, "_forwards", trace_service.ForwardCache())
    request = dict(task_name=None, task_params=LONG["params"], seed=3, samples=1, sites=["memory.read_weights"],
                   max_task_param=4096, forward_cache_bytes=1 << 20)
    cache = ModelCache(max_checkpoints=1, replicas=1)
    whole = trace_service.trace(store, cache, ntm["id"], reduce={"max_points": 16}, **request)
    zoom = trace_service.trace(store, cache, ntm["id"], window=[40, 60], **request)
    assert len(forwards) == 1 and whole["time"]["bin"] == 13 and zoom["time"]["window"] == [40, 60]
    trace_service.trace(store, cache, ntm["id"], **{**request, "seed": 4})  # another sample: another forward
    assert len(forwards) == 2
    # a forward larger than the budget is not kept
    trace_service.trace(store, cache, ntm["id"], **{**request, "seed": 5, "forward_cache_bytes": 100})
    trace_service.trace(store, cache, ntm["id"], **{**request, "seed": 5, "forward_cache_bytes": 100})
    assert len(forwards) == 4
