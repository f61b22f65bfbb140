import json

import torch

from mnemoscope.analysis.trace import run_trace


def test_trace_scores_and_sites(make_model, task):
    m = make_model("ntm", task)
    batch = task.sample(3, 0)
    tr = run_trace(m, task, batch, sites=["memory.read", "memory.matrix"])
    T = batch.mask.shape[1]
    assert tr.metric_per_step.shape == (T,) and tr.loss_per_step.shape == (T,)
    assert abs(float(tr.metric_per_step.sum()) - tr.metric) < 1e-4  # per-step shares add up
    assert tr.sites["memory.read"].values.shape == (3, T, 1, 4)
    assert tr.sites["memory.read"].axes == ["batch", "time", "head", "feature"]
    assert tr.sites["memory.matrix"].values.shape == (3, T, 8, 4)
    assert torch.allclose(tr.probs, torch.sigmoid(tr.logits))
    assert not tr.scored[0] and tr.scored[-1]  # copy scores only the recall phase
    d = tr.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["metric_name"] == "wrong_bits"


def test_trace_runs_on_every_arch(arch, make_model, task):
    m = make_model(arch, task)
    batch = task.sample(2, 1)
    tr = run_trace(m, task, batch, sites=["*"])
    assert tr.logits.shape[:2] == (2, batch.inputs.shape[1])
    assert "output" in tr.sites
