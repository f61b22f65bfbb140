import json
import math

import torch

from mnemoscope.analysis.entropy import DIFFUSE, SHARP, band, normalised_entropy, site_entropy, weight_entropy
from mnemoscope.models.sites import SiteSpec


def test_normalised_entropy_bounds():
    uniform = torch.full((1, 1, 8), 1 / 8)
    onehot = torch.zeros(1, 1, 8)
    onehot[..., 3] = 1
    h, H, mass = normalised_entropy(torch.cat([uniform, onehot], 1), 8)
    assert torch.allclose(h[0], torch.tensor([1.0, 0.0]), atol=1e-6)
    assert abs(float(H[0, 0]) - math.log(8)) < 1e-5
    # sub-stochastic weights are judged by their shape; empty rows have no entropy
    h, _, mass = normalised_entropy(torch.tensor([[0.25, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), 4)
    assert abs(float(h[0]) - 0.5) < 1e-6 and math.isnan(float(h[1]))
    assert band(0.95) == "diffuse" and band(0.05) == "sharp" and band(0.5) == "focused"
    assert SHARP < DIFFUSE


def test_attention_rows_normalise_by_visible_keys():
    spec = SiteSpec("a", "attention", (1, None), ("head", "key"), distribution=True)
    T = 4
    causal_uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    values = causal_uniform.view(1, T, 1, T)
    e = site_entropy("a", spec, values)
    assert math.isnan(float(e.per_step[0, 0]))  # one key: no choice, no entropy
    assert torch.allclose(e.per_step[1:, 0], torch.ones(T - 1), atol=1e-6)
    assert e.label == "diffuse"
    # sliding window of 2: the support is the window, not t + 1
    window = torch.zeros(T, T)
    for t in range(T):
        window[t, max(0, t - 1):t + 1] = 1
    window = window / window.sum(-1, keepdim=True)
    e = site_entropy("a", spec, window.view(1, T, 1, T))
    assert torch.allclose(e.per_step[1:, 0], torch.ones(T - 1), atol=1e-6)


def test_real_ntm_write_head_is_sharp(ntm):
    from mnemoscope.models.tasks import make_task

    task = make_task("copy", min_length=8, max_length=8)
    res = weight_entropy(ntm, task, task.sample(4, 0))
    w = res.site("memory.write_weights")
    assert w.label == "sharp" and w.fraction_sharp > 0.5
    assert w.per_step.shape == (17, 1) and w.axes == ["head"]
    assert any("memory.write_weights" in f and "sharp" in f for f in res.flags)
    json.dumps(res.to_dict(), allow_nan=False)


def test_every_arch(arch, make_model, task):
    m = make_model(arch, task)
    res = weight_entropy(m, task, task.sample(2, 0))
    for s in res.sites:
        finite = s.per_step[~torch.isnan(s.per_step)]
        assert ((finite >= 0) & (finite <= 1)).all()
    json.dumps(res.to_dict(), allow_nan=False)
