"""Explore's entropy figure plots the analysis engine's numbers, sent with the trace.

A tiny `sequence` model with one sliding-window attention block (window 3) is traced
through the REST API; the figure's y values must be `analysis.entropy`'s for the same
sample. With zeroed query/key weights every step attends uniformly over its window, which
must read 1.0 (normalised by the keys the window lets it see, not by t + 1).
"""
from __future__ import annotations

import math

import pytest
import torch
from fastapi.testclient import TestClient

from mnemoscope.analysis.entropy import site_entropy
from mnemoscope.analysis.sites import specs
from mnemoscope.analysis.trace import run_trace
from mnemoscope.dashboard import explore_data, explore_figures
from mnemoscope.models import build_model
from mnemoscope.models.checkpoints import save_checkpoint
from mnemoscope.models.tasks import make_task
from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings

SITE = "layers.0.attention.pattern"
WINDOW, HEADS, LENGTH, SEED = 3, 2, 4, 5
TASK = {"name": "copy", "params": {"bits": 4, "min_length": LENGTH, "max_length": LENGTH}}


def attention_model(uniform: bool):
    torch.manual_seed(0)
    model = build_model("sequence", dict(input_size=5, output_size=4, d_model=8, heads=HEADS, blocks=["attention"],
                                         window=WINDOW))
    if uniform:  # q = k = 0: equal scores, so softmax spreads evenly over the window
        with torch.no_grad():
            model.layers[0].mixer.qkv.weight.zero_()
    return model


def dashboard_series(tmp_path, model) -> tuple[list[dict], dict]:
    """The entropy series and figure Explore draws from a real trace answer."""
    path = save_checkpoint(tmp_path / "attention.safetensors", model, task=make_task(TASK), name="attention")
    app = create_app(Settings(data_dir=tmp_path / "data", workers=1, dashboard=False, auto_analyze=False))
    client = TestClient(app)  # no lifespan: traces run in this process, no job workers needed
    upload = client.post("/api/checkpoints", files={"file": (path.name, path.read_bytes())})
    assert upload.status_code == 201, upload.text
    cid = upload.json()["id"]
    site_specs = client.get(f"/api/checkpoints/{cid}/sites").json()
    answer = client.post(f"/api/checkpoints/{cid}/trace",
                         json={"task": {"params": TASK["params"]}, "seed": SEED, "sites": ["layers.*.attention.pattern"]})
    assert answer.status_code == 200, answer.text
    trace = answer.json()
    series = explore_data.entropy_series(trace, site_specs)
    return series, explore_figures.entropy_figure(series, len(trace["inputs"]["data"][0]))


def engine_values(model) -> torch.Tensor:
    """`analysis.entropy` on the same sample: [T, heads]."""
    task = make_task(TASK)
    batch = task.sample(1, SEED)
    record = run_trace(model, task, batch, [SITE]).sites[SITE]
    return site_entropy(SITE, specs(model)[SITE], record.values).values[0]


def as_floats(ys: list) -> list[float]:
    return [math.nan if y is None else y for y in ys]


@pytest.mark.parametrize("uniform", [False, True])
def test_entropy_figure_shows_the_engines_values(tmp_path, uniform):
    model = attention_model(uniform)
    series, fig = dashboard_series(tmp_path, model)
    expected = engine_values(model)
    assert [s["label"] for s in series] == [f"{SITE} head {h}" for h in range(HEADS)]
    for head, trace in enumerate(fig["data"]):
        want = expected[:, head].tolist()
        assert as_floats(trace["y"]) == pytest.approx(want, nan_ok=True, abs=1e-6)
    if uniform:
        T = expected.shape[0]
        for trace in fig["data"]:
            assert trace["y"][0] is None  # one visible key: no choice, no entropy
            assert trace["y"][1:] == pytest.approx([1.0] * (T - 1))  # past the window too (t >= 3)
    else:
        assert not all(y == pytest.approx(1.0) for y in fig["data"][0]["y"][1:])  # a real pattern, not all uniform
