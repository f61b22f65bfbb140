"""Ground truth for the verdict: models whose use of memory we know by construction, and the
rules on precomputed numbers (the calibration hook)."""
import json

import pytest
import torch

from mnemoscope.analysis.reliance import Estimate, decide, reliance
from mnemoscope.models.tasks import make_task

from .conftest import TOKEN_ARCHS


@pytest.fixture
def copy20():
    return make_task("copy", min_length=20, max_length=20)


def test_real_ntm_is_functional(ntm, copy20):
    res = reliance(ntm, copy20, copy20.sample(12, 0), n_boot=300)
    assert res.verdict == "functional"
    assert res.score > 0.5 and res.ci95[0] >= 0.5
    assert res.ci95[0] <= res.score <= res.ci95[1]
    assert res.metric_clean == 0.0 and res.chance == 80.0
    assert res.prob_change > 0.2 and res.stability >= 0.8
    assert not any(w["code"] == "collapsed_memory" for w in res.warnings)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    for key in ("necessity", "sufficiency", "conflict", "joint_necessity"):
        assert set(d[key]) == {"value", "ci95", "mode"}, key
    assert d["necessity"]["mode"] == "mean" and d["conflict"]["mode"] == "resample"
    assert set(d["components"]) == {"memory", "bypass", "state"}
    assert set(d["components"]["state"]) == {"necessity", "sufficiency"} and d["components"]["state"]["sufficiency"] is None
    assert d["components"]["memory"]["necessity"] == d["necessity"]
    assert {"value", "ci95", "mode", "positions", "steps"} <= set(d["per_position"])
    assert d["score"] == d["necessity"]["value"] and isinstance(d["warnings"], list)
    assert {(r["component"], r["mode"]) for r in d["removals"]} >= {
        ("memory", "mean"), ("bypass", "mean"), ("both", "mean"), ("state", "mean"), ("memory", "zero"),
        ("memory", "resample")}


def test_ignored_memory_is_decorative_despite_busy_weights(decorative_ntm, copy20):
    batch = copy20.sample(12, 0)
    res = reliance(decorative_ntm, copy20, batch, n_boot=300)
    assert res.verdict == "decorative"
    assert res.score == 0.0 and res.prob_change == 0.0
    from mnemoscope.models.sites import run_with_sites

    with torch.no_grad():
        _, tr = run_with_sites(decorative_ntm, batch.inputs, record=["memory.read_weights"])
    w = tr["memory.read_weights"]
    assert float(0.5 * (w[:, 1:] - w[:, :-1]).abs().sum(-1).mean()) > 0.2
    assert any("busy" in line for line in res.evidence)


def test_cutting_the_bypass_without_retraining_leaves_nothing_to_measure(no_bypass_ntm, copy20):
    """Zeroing the output layer's controller columns breaks the trained model: it is at chance,
    where its outputs still follow its reads, but no ablation has a gap to lose (the earlier
    rule called this functional on memory's share of the output change alone)."""
    res = reliance(no_bypass_ntm, copy20, copy20.sample(12, 0), n_boot=300)
    assert res.at_chance and res.verdict == "undetermined"
    assert res.prob_change > 0.02  # outputs do move without memory...
    assert [w["code"] for w in res.warnings][:1] == ["at_chance"]  # ...but the model is at chance
    assert res.components["bypass"]["necessity"]["value"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("task_name", ["copy", "mqar"])
def test_no_untrained_model_is_functional(arch, make_model, task_name):
    """An untrained network's outputs depend on every path; at chance nothing can be shown."""
    tiny_model = make_model
    task = make_task("copy", bits=3, min_length=1, max_length=3) if task_name == "copy" else \
        make_task("mqar", vocab_size=16, seq_len=16, num_pairs=2)
    if arch in TOKEN_ARCHS and getattr(task, "vocab_size", None) is None:
        with pytest.raises(TypeError, match="takes token ids"):
            tiny_model(arch, task)
        return
    res = reliance(tiny_model(arch, task), task, task.sample(16, 0), n_boot=200)
    assert res.verdict != "functional"
    if res.sites:
        assert res.verdict in ("undetermined", "decorative")
        if res.verdict == "undetermined":
            assert res.at_chance and any(w["code"] == "at_chance" for w in res.warnings)


def test_collapsed_memory_is_warned(make_model, task):
    """Constant init and all-zero initial weightings: every slot holds the same row forever."""
    from mnemoscope.models import build_model

    torch.manual_seed(0)
    m = build_model("ntm", dict(input_size=task.input_size, output_size=task.output_size, controller_size=8,
                                memory_slots=8, memory_width=4, memory_init="constant", initial_weights="zero")).eval()
    res = reliance(m, task, task.sample(8, 0), n_boot=100)
    codes = [w["code"] for w in res.warnings]
    assert "collapsed_memory" in codes
    torch.manual_seed(0)
    random = build_model("ntm", dict(input_size=task.input_size, output_size=task.output_size, controller_size=8,
                                     memory_slots=8, memory_width=4, memory_init="random")).eval()
    assert "collapsed_memory" not in [w["code"] for w in reliance(random, task, task.sample(8, 0), n_boot=50).warnings]


def test_no_memory_model_is_decorative(make_model, task):
    res = reliance(make_model("lstm", task), task, task.sample(4, 0), n_boot=50)
    assert res.verdict == "decorative" and res.sites == []
    assert any("no memory" in line for line in res.evidence)
    assert res.components == {"memory": None, "bypass": None, "state": None}


def test_bootstrap_is_seeded(ntm):
    task = make_task("copy", min_length=3, max_length=6)
    batch = task.sample(8, 0)
    a = reliance(ntm, task, batch, n_boot=200, seed=1)
    b = reliance(ntm, task, batch, n_boot=200, seed=1)
    assert a.ci95 == b.ci95 and a.score == b.score and a.stability == b.stability
    assert a.to_dict()["per_position"] == b.to_dict()["per_position"]


def test_every_arch(arch, make_model, task):
    res = reliance(make_model(arch, task), task, task.sample(4, 0), n_boot=50)
    assert res.verdict in ("undetermined", "decorative", "functional", "redundant", "partial")
    assert 0.0 <= res.score <= 1.0 and res.evidence and 0.0 <= res.stability <= 1.0
    json.dumps(res.to_dict(), allow_nan=False)


def E(value, lo=None, hi=None):
    return Estimate(value, value if lo is None else lo, value if hi is None else hi)


ABOVE = dict(at_chance=False, still=False)


@pytest.mark.parametrize("numbers, verdict", [
    # at chance: nothing to measure, unless nothing moves at all
    (dict(at_chance=True, still=False, necessity=0.0, moves=0.14), "undetermined"),
    (dict(at_chance=True, still=True, necessity=0.0, moves=0.0), "decorative"),
    # outputs still: decorative whatever else
    (dict(at_chance=False, still=True, necessity=E(0.0)), "decorative"),
    # functional on the lower bound, never the point estimate alone
    (dict(**ABOVE, necessity=E(0.9, 0.8, 1.0), moves=0.4), "functional"),
    (dict(**ABOVE, necessity=E(0.6, 0.3, 0.8), moves=0.3), "partial"),
    # redundant: each path alone sufficient
    (dict(**ABOVE, necessity=E(0.1), sufficiency=E(0.9, 0.7, 1.0), bypass_necessity=E(0.1),
          bypass_sufficiency=E(0.95, 0.8, 1.0), joint_necessity=E(0.9), moves=0.2), "redundant"),
    # redundant: neither necessary, both together are
    (dict(**ABOVE, necessity=E(0.2, 0.1, 0.3), sufficiency=E(0.3), bypass_necessity=E(0.1, 0.0, 0.2),
          bypass_sufficiency=E(0.3), joint_necessity=E(0.9, 0.8, 1.0), moves=0.1), "redundant"),
    # decorative: neither necessary nor sufficient, outputs barely move, no position depends on it
    (dict(**ABOVE, necessity=E(0.02, 0.0, 0.05), sufficiency=E(0.0), bypass_necessity=E(0.9),
          bypass_sufficiency=E(1.0), joint_necessity=E(1.0), per_position=E(0.0), moves=0.03), "decorative"),
    # sparse use is not averaged away: a few positions depend on memory -> partial
    (dict(**ABOVE, necessity=E(0.05, 0.02, 0.08), sufficiency=E(0.0), bypass_necessity=E(0.9),
          bypass_sufficiency=E(0.9), joint_necessity=E(1.0), per_position=E(0.1, 0.07, 0.13), moves=0.03), "partial"),
    # a pure memory stack (no bypass): the bypass numbers are None
    (dict(**ABOVE, necessity=E(0.97, 0.94, 1.0), moves=0.9), "functional"),
    (dict(**ABOVE, necessity=E(0.3, 0.2, 0.4), moves=0.2), "partial"),
])
def test_verdict_rules(numbers, verdict):
    got, reason = decide(**numbers)
    assert got == verdict and reason


def test_decide_takes_plain_floats():
    assert decide(at_chance=False, necessity=0.97, moves=0.5)[0] == "functional"
    assert decide(at_chance=False, necessity=0.0, sufficiency=0.0, moves=0.0, per_position=0.0)[0] == "decorative"


def test_modes_disagree_warning():
    """When resample says necessary and the removals say it is not (a controller that can do
    the task alone but follows the reads when they conflict), the report says so."""
    from mnemoscope.analysis.reliance import _Numbers, _warnings

    n = _Numbers(at_chance=False, still=False, necessity=E(0.05, 0.0, 0.1), sufficiency=E(1.0),
                 bypass_necessity=E(0.0), bypass_sufficiency=E(0.95, 0.9, 1.0), joint=E(0.9), state_necessity=None,
                 conflict=E(0.95, 0.9, 1.0), zero_necessity=E(0.0, 0.0, 0.05), per_position=E(0.0), moves=E(0.3))
    codes = [w["code"] for w in _warnings(n, 1.0, [], False, None, None)]
    assert codes == ["ablation_modes_disagree"]
    assert decide(**n.decide_args())[0] == "redundant"
    assert [w["code"] for w in _warnings(n, 0.5, [], False, None, None)] == ["ablation_modes_disagree", "unstable"]
