"""Batched activation patching equals the one-forward-per-patch loop."""
import json

import pytest
import torch

from mnemoscope.analysis.patching import patch_sweep, patch_sweep_naive
from mnemoscope.models.tasks import make_task
from mnemoscope.models.tasks.base import PatchPair


def _max_diff(a, b):
    """Max abs difference of the recovery matrices and of the raw scores. Untrained tiny
    models barely tell the answers apart (S_clean - S_corrupted ~ 1e-3), so there the
    recovery difference is measured in units of that gap only where the gap is above 1."""
    assert a.scores.shape == b.scores.shape and a.sites == b.sites
    both = ~torch.isnan(a.scores)
    assert torch.equal(both, ~torch.isnan(b.scores))
    gap = min(1.0, abs(a.score_clean - a.score_corrupted))
    rec = float((a.scores[both] - b.scores[both]).abs().max()) * gap
    return rec, float((a.patched[both] - b.patched[both]).abs().max())


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_batched_equals_naive_on_real_ntm(ntm, direction):
    task = make_task("copy", min_length=3, max_length=3)
    pair = task.patch_pairs(2, 0)
    sites = ["memory.read", "memory.write_weights", "controller.output"]
    fast = patch_sweep(ntm, task, pair, sites, direction=direction)
    slow = patch_sweep_naive(ntm, task, pair, sites, direction=direction)
    assert fast.scores.shape == (3, 7)
    assert max(_max_diff(fast, slow)) < 1e-5
    assert float((fast.scores - slow.scores).abs().max()) < 1e-5  # the gap is large: recovery itself
    # the real NTM solves copy, so the clean answer is far from the corrupted one
    assert fast.score_clean > 5 > -5 > fast.score_corrupted


def test_patching_a_read_restores_its_answer(ntm):
    """Denoising the read at the step whose answer differs brings most of it back."""
    task = make_task("copy", min_length=6, max_length=6)
    pair = task.patch_pairs(1, 4)
    res = patch_sweep(ntm, task, pair, ["memory.read", "controller.output"])
    t = int(pair.differs[0].nonzero()[0])
    # this NTM fetches a row one step ahead: the read at t-1 reaches the output at t through
    # the controller, so the clean read there, or the controller's clean output at t, restores it
    assert res.scores[0, t - 1] > 0.5 and res.scores[1, t] > 0.5
    assert res.scores[1, :t].abs().max() < 1e-4 and res.scores[1, t + 1:].abs().max() < 1e-4
    r = t - 7  # the corrupted input row, fed at step r
    assert torch.equal(res.scores[:, :r], torch.zeros(2, r))  # identical before r: skipped, exactly 0


def test_per_element_and_chunking(make_model, task):
    m = make_model("dnc", task)
    pair = task.patch_pairs(2, 1)
    fast = patch_sweep(m, task, pair, ["memory.read", "memory.read_weights"], per_element="head",
                       memory_budget_mb=1e-6)  # one variant per chunk
    slow = patch_sweep_naive(m, task, pair, ["memory.read", "memory.read_weights"], per_element="head")
    assert fast.scores.shape == (2, 7, 2)
    assert max(_max_diff(fast, slow)) < 1e-5


def test_every_arch_default_sites(arch, make_model, task):
    m = make_model(arch, task)
    pair = task.patch_pairs(2, 0)
    fast = patch_sweep(m, task, pair)
    slow = patch_sweep_naive(m, task, pair)
    assert fast.scores.shape == (len(fast.sites), pair.clean.inputs.shape[1])
    assert max(_max_diff(fast, slow)) < 1e-5
    json.dumps(fast.to_dict(), allow_nan=False)
    json.dumps(fast.summary(), allow_nan=False)


def test_classes_task_and_skips(make_model):
    task = make_task("mqar", vocab_size=16, seq_len=16, num_pairs=2)
    m = make_model("sequence", task)
    pair = task.patch_pairs(2, 0)
    fast = patch_sweep(m, task, pair, ["layers.0.memory.read", "layers.0.memory.out"])
    slow = patch_sweep_naive(m, task, pair, ["layers.0.memory.read", "layers.0.memory.out"])
    assert max(_max_diff(fast, slow)) < 1e-5
    assert fast.skipped > 0  # before the changed value token clean and corrupted runs agree


def test_errors(make_model, task):
    m = make_model("ntm", task)
    pair = task.patch_pairs(2, 0)
    with pytest.raises(ValueError, match="direction"):
        patch_sweep(m, task, pair, direction="sideways")
    with pytest.raises(ValueError, match="axis"):
        patch_sweep(m, task, pair, ["controller.output"], per_element="head")
    pair.corrupted = pair.clean
    pair.differs = torch.zeros_like(pair.differs)
    with pytest.raises(ValueError, match="nothing to recover"):
        patch_sweep(m, task, pair)


def test_intervals_all_steps_and_alignment(ntm):
    """Each cell's interval holds its value; the all-steps patch matches the naive
    every-step intervention; the answer-aligned view puts every pair's answer at offset 0."""
    task = make_task("copy", min_length=2, max_length=5)
    pair = task.patch_pairs(8, 3)
    sites = ["memory.read", "controller.output"]
    fast = patch_sweep(ntm, task, pair, sites)
    slow = patch_sweep_naive(ntm, task, pair, sites)
    assert fast.all_steps == pytest.approx(slow.all_steps, abs=1e-5)
    finite = torch.isfinite(fast.scores)
    lo, hi = fast.ci95[..., 0], fast.ci95[..., 1]
    assert ((lo[finite] <= fast.scores[finite] + 1e-6) & (fast.scores[finite] <= hi[finite] + 1e-6)).all()
    assert (hi - lo)[finite].max() > 0  # pairs differ: the intervals have width
    view = fast.aligned["answer"]
    zero = view["offsets"].index(0)
    assert view["pairs"][zero] == 8
    # one pair alone: its aligned value at offset d is its own cell at answer + d
    one = patch_sweep(ntm, task, PatchPair(pair.clean.select([0]), pair.corrupted.select([0]), pair.differs[:1]),
                      sites)
    a = int(one.aligned["answer"]["offsets"].index(0))
    t0 = int(pair.differs[0].float().argmax())
    assert torch.allclose(one.aligned["answer"]["scores"][:, a], one.scores[:, t0], atol=1e-5, equal_nan=True)
    item = fast.aligned["item"]
    assert len(item["offsets"]) == item["scores"].shape[1]
    assert json.dumps(fast.to_dict())  # JSON-able
