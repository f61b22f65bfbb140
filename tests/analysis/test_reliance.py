"""Ground truth for the verdict: models whose use of memory we know by construction."""
import json

import pytest
import torch

from mnemoscope.analysis.reliance import reliance
from mnemoscope.models.tasks import make_task


@pytest.fixture
def copy20():
    return make_task("copy", min_length=20, max_length=20)


def test_real_ntm_is_functional(ntm, copy20):
    res = reliance(ntm, copy20, copy20.sample(12, 0), n_boot=300)
    assert res.verdict == "functional"
    assert res.score > 0.9
    assert res.ci95[0] <= res.score <= res.ci95[1]
    assert res.metric_clean == 0.0 and res.chance == 80.0
    assert res.prob_change > 0.3
    json.dumps(res.to_dict(), allow_nan=False)


def test_ignored_memory_is_decorative_despite_busy_weights(decorative_ntm, copy20):
    batch = copy20.sample(12, 0)
    res = reliance(decorative_ntm, copy20, batch, n_boot=300)
    assert res.verdict == "decorative"
    assert res.score == 0.0 and res.prob_change == 0.0
    # the read weights really are busy: they move from step to step
    from mnemoscope.models.sites import run_with_sites

    with torch.no_grad():
        _, tr = run_with_sites(decorative_ntm, batch.inputs, record=["memory.read_weights"])
    w = tr["memory.read_weights"]
    assert float(0.5 * (w[:, 1:] - w[:, :-1]).abs().sum(-1).mean()) > 0.2
    assert any("busy" in line for line in res.evidence)


def test_removed_bypass_is_functional(no_bypass_ntm, copy20):
    res = reliance(no_bypass_ntm, copy20, copy20.sample(12, 0), n_boot=300)
    assert res.verdict == "functional"
    assert res.memory_share == pytest.approx(1.0)


def test_at_chance_with_still_outputs_is_decorative(make_model, task):
    """At chance the metric cannot decide; outputs that do not move mean decorative,
    whatever the accuracy (here a model whose output layer ignores everything)."""
    m = make_model("ntm", task)
    with torch.no_grad():
        m.fc.weight.zero_()
    res = reliance(m, task, task.sample(8, 0), n_boot=100)
    assert res.at_chance and res.verdict == "decorative"


def test_no_memory_model_is_decorative(make_model, task):
    res = reliance(make_model("lstm", task), task, task.sample(4, 0), n_boot=50)
    assert res.verdict == "decorative" and res.sites == []
    assert any("no memory" in line for line in res.evidence)


def test_bootstrap_is_seeded(ntm):
    task = make_task("copy", min_length=5, max_length=5)
    batch = task.sample(8, 0)
    a = reliance(ntm, task, batch, n_boot=200, seed=1)
    b = reliance(ntm, task, batch, n_boot=200, seed=1)
    assert a.ci95 == b.ci95 and a.score == b.score


def test_every_arch(arch, make_model, task):
    res = reliance(make_model(arch, task), task, task.sample(4, 0), n_boot=50)
    assert res.verdict in ("decorative", "functional", "partial")
    assert 0.0 <= res.score <= 1.0 and res.evidence


@pytest.mark.parametrize("numbers, verdict", [
    # outputs still: decorative whatever the metric says
    (dict(score=0.9, hi=1.0, at_chance=False, prob_change=0.001, flip_rate=0.0, share=0.5), "decorative"),
    (dict(score=0.0, hi=0.0, at_chance=True, prob_change=0.0, flip_rate=0.0, share=0.0), "decorative"),
    # at chance: the output change (and memory's share of it) decides
    (dict(score=0.0, hi=0.0, at_chance=True, prob_change=0.3, flip_rate=0.3, share=0.9), "functional"),
    (dict(score=0.0, hi=0.0, at_chance=True, prob_change=0.3, flip_rate=0.3, share=0.2), "partial"),
    (dict(score=0.0, hi=0.0, at_chance=True, prob_change=0.03, flip_rate=0.03, share=1.0), "partial"),
    # above chance: the score decides
    (dict(score=0.95, hi=1.0, at_chance=False, prob_change=0.4, flip_rate=0.4, share=0.5), "functional"),
    (dict(score=0.3, hi=0.5, at_chance=False, prob_change=0.1, flip_rate=0.1, share=0.5), "partial"),
    (dict(score=0.02, hi=0.1, at_chance=False, prob_change=0.03, flip_rate=0.03, share=0.5), "decorative"),
    (dict(score=0.02, hi=0.1, at_chance=False, prob_change=0.2, flip_rate=0.03, share=0.5), "partial"),
])
def test_verdict_rules(numbers, verdict):
    from mnemoscope.analysis.reliance import decide

    assert decide(**numbers) == verdict
