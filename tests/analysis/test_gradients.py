import json

import pytest
import torch

from mnemoscope.analysis.gradients import gradient_flow, gradient_flow_series
from mnemoscope.models.tasks import make_task


def test_group_norms_match_a_plain_backward(make_model, task):
    m = make_model("ntm", task)
    batch = task.sample(3, 0)
    res = gradient_flow(m, task, batch)
    m.zero_grad()
    task.loss(m(batch.inputs), batch).backward()
    groups = m.component_groups()
    for g in res.groups:
        sq = sum(float(p.grad.pow(2).sum()) for n, p in m.named_parameters()
                 if p.grad is not None and any(n == q or n.startswith(q + ".") for q in groups[g.name]))
        assert abs(g.grad_norm - sq ** 0.5) < 1e-5 * max(1.0, sq ** 0.5)
    assert res.ungrouped == []
    T = batch.mask.shape[1]
    assert res.memory_per_step.shape == (T,) and res.ratio_per_step.shape == (T,)
    assert res.ratio is not None and res.ratio > 0
    json.dumps(res.to_dict(), allow_nan=False)


def test_ignored_memory_gets_no_gradient(decorative_ntm):
    task = make_task("copy", min_length=4, max_length=4)
    res = gradient_flow(decorative_ntm, task, task.sample(3, 0))
    assert res.memory_total == 0.0 and res.bypass_total > 0
    assert res.ratio == 0.0
    assert res.group("memory").grad_norm == 0.0  # heads get nothing when reads are ignored


def test_requires_grad_flags_restored(make_model, task):
    m = make_model("lstm", task)
    for p in m.parameters():
        p.requires_grad_(False)
    res = gradient_flow(m, task, task.sample(2, 0))
    assert all(not p.requires_grad for p in m.parameters())
    assert res.memory_total is None and res.ratio is None  # no memory reads in an LSTM
    assert res.group("controller").grad_norm > 0


def test_every_arch(arch, make_model, task):
    m = make_model(arch, task)
    res = gradient_flow(m, task, task.sample(2, 0))
    assert sum(g.grad_norm for g in res.groups) > 0
    json.dumps(res.to_dict(), allow_nan=False)


def test_series_over_checkpoints(tmp_path, make_model, task):
    from mnemoscope.models.checkpoints import save_checkpoint

    paths = []
    for step in (20, 10):
        m = make_model("ntm", task, seed=step)
        paths.append(save_checkpoint(tmp_path / f"s{step}.safetensors", m, task=task.spec(), step=step))
    series = gradient_flow_series(paths, samples=2)
    assert [p.step for p in series] == [10, 20]
    assert all(p.result.ratio is not None for p in series)
    json.dumps([p.to_dict() for p in series], allow_nan=False)
    with pytest.raises(ValueError, match="at least one"):
        gradient_flow_series([])


def test_attribution_is_invariant_to_rescaling_a_path():
    """Scaling a DNC's write vector by k and the weights that read the reads by 1/k keeps the
    logits; the gradient-norm ratio moves by 1/k, gradient x activation does not."""
    from mnemoscope.models import build_model

    task = make_task("associative_recall", bits=4, item_length=1, min_items=2, max_items=3)
    torch.manual_seed(0)
    cfg = dict(input_size=task.input_size, output_size=task.output_size, controller_size=16,
               memory_slots=8, memory_width=6, read_heads=2)
    base = build_model("dnc", cfg).eval()
    batch = task.sample(16, 0)
    before = gradient_flow(base, task, batch)
    R, W, H = 2, 6, 16
    start = R * W + R + W + 1 + W  # read keys, strengths, write key, strength, erase; then the write vector
    for k in (10.0, 0.1):
        m = build_model("dnc", cfg).eval()
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            m.interface.weight[start:start + W] *= k
            m.interface.bias[start:start + W] *= k
            m.controller.weight_ih[:, task.input_size:] /= k
            m.head.weight[:, H:] /= k
        assert (m(batch.inputs) - base(batch.inputs)).abs().max() < 1e-4
        after = gradient_flow(m, task, batch)
        assert after.ratio == pytest.approx(before.ratio / k, rel=0.05)  # the diagnostic moves
        for comp in ("memory", "bypass", "state"):
            assert after.attribution[comp] == pytest.approx(before.attribution[comp], rel=1e-3), comp
        assert after.attribution_share == pytest.approx(before.attribution_share, rel=1e-3)
    assert before.attribution["memory"] > 0 and set(before.attribution) == {"memory", "bypass", "state"}
