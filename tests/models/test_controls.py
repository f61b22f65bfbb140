"""The control suite's recipes match their kinds, and the cuts hold by construction."""
import dataclasses

import pytest
import torch

from mnemoscope.models import controls, zoo
from mnemoscope.models.registry import build_model
from mnemoscope.models.sites import Intervention, run_with_sites
from mnemoscope.models.tasks import make_task
from mnemoscope.models.training import TrainConfig, _Run


def test_every_recipe_is_valid_and_its_config_matches_its_kind():
    seen = set()
    for c in controls.controls():
        zoo.check_recipe(c.recipe)
        assert c.name not in seen and c.name == f"{c.family}-{c.kind}-s{c.seed}"
        seen.add(c.name)
        cut = c.recipe.config.get("cut", "none")
        train = c.recipe.train
        assert (c.verdict, c.warning) == controls.TRUTH[c.kind] and c.recipe.seed == c.seed
        assert (train["steps"] == 0) == (c.kind == "untrained")
        assert (cut == "memory") == (c.kind == "decorative")
        assert (cut == "sparse") == (c.kind == "sparse")
        assert ("path_dropout" in train) == (c.kind == "redundant")
        assert (c.recipe.config.get("memory_init") == "constant") == (c.kind == "collapsed")
        if c.kind == "functional" and c.family in ("ntm", "dnc", "hybrid"):
            assert cut == "bypass"


def test_families_say_which_kinds_they_leave_out():
    for f in controls.FAMILIES:
        left = set(controls.KINDS) - set(f.kinds)
        assert bool(left) == bool(f.missing)
        assert all(k in f.missing for k in left)


def test_select_by_family_kind_or_name():
    assert {c.family for c in controls.select(["ntm"])} == {"ntm"}
    assert {c.kind for c in controls.select(["sparse"], seeds=(0,))} == {"sparse"}
    assert [c.name for c in controls.select(["ntm-functional-s1"])] == ["ntm-functional-s1"]
    with pytest.raises(ValueError, match="no control"):
        controls.select(["nope"])


def _model(family: str, kind: str):
    c = controls.get_control(f"{family}-{kind}-s0")
    task = make_task(c.recipe.task)
    torch.manual_seed(0)
    return build_model(c.recipe.arch, c.recipe.model_config(task)), task


@pytest.mark.parametrize("family", ["ntm", "dnc", "hybrid", "linear"])
def test_a_cut_path_moves_no_output_whatever_its_weights(family):
    """decorative: removing memory's sites changes nothing; functional (with a bypass):
    removing the bypass changes nothing. Untrained weights: the cut alone guarantees it."""
    for kind, role in (("decorative", "memory"), ("functional", "bypass")):
        model, task = _model(family, kind)
        sites = [n for n, s in model.site_specs().items() if s.role == role]
        if not sites:
            continue  # a pure memory stack has no bypass to cut
        model.eval()
        x = task.sample(8, 0).inputs
        with torch.no_grad():
            clean = model(x)
            cut, _ = run_with_sites(model, x, (), [Intervention(n, 0.0) for n in sites])
            other = [Intervention(n, 0.0) for n, s in model.site_specs().items()
                     if s.role == ("bypass" if role == "memory" else "memory")]
            moved, _ = run_with_sites(model, x, (), other)
        assert torch.equal(clean, cut), (family, kind)
        if other:  # the other path does reach the output
            assert not torch.allclose(clean, moved), (family, kind)


def test_sparse_cut_opens_memory_at_every_third_step_only():
    model, task = _model("ntm", "sparse")
    model.eval()
    x = task.sample(8, 0).inputs
    with torch.no_grad():
        clean = model(x)
        out, _ = run_with_sites(model, x, (), [Intervention("memory.read", 0.0)])
    moved = (clean - out).abs().amax(dim=(0, 2)) > 0
    t = torch.arange(x.shape[1])
    assert torch.equal(moved, t % 3 == 0)


def test_old_configs_load_with_nothing_cut():
    for arch in ("ntm", "dnc", "sequence"):
        from mnemoscope.models.registry import architecture
        assert architecture(arch).Config.__dataclass_fields__["cut"].default == "none"
    with pytest.raises(ValueError, match="cut must be one of"):
        build_model("ntm", {"input_size": 5, "output_size": 4, "cut": "reads"})


def test_path_dropout_removes_one_role_per_sequence():
    model, task = _model("ntm", "redundant")
    cfg = TrainConfig(steps=1, path_dropout={"memory": 0.5, "bypass": 0.5}, progress=False)
    run = _Run(model, task, cfg, None, (), None)
    ivs = run.path_dropout(64)
    rows = {iv.site: iv.rows for iv in ivs}
    assert set(rows) == {"memory.read", "controller.output"}
    assert not (rows["memory.read"] & rows["controller.output"]).any()  # exclusive draws
    assert (rows["memory.read"] | rows["controller.output"]).all()  # shares add up to 1
    batch = dataclasses.replace(cfg, path_dropout={"memory": 1.0}, path_dropout_per="batch", path_dropout_mode="mean")
    run = _Run(model, task, batch, None, (), None)
    (iv,) = run.path_dropout(16)
    assert iv.rows.all() and callable(iv.value)
    with pytest.raises(ValueError, match="add up to at most 1"):
        TrainConfig(steps=1, path_dropout={"memory": 0.7, "bypass": 0.7})
    with pytest.raises(ValueError, match="no sites of role"):
        _Run(model, task, TrainConfig(steps=1, path_dropout={"series": 0.5}, progress=False), None, (), None)


def test_path_dropout_trains_and_is_recorded():
    from mnemoscope.models.training import train
    model, task = _model("ntm", "redundant")
    before = [p.detach().clone() for p in model.parameters()]
    res = train(model, task, TrainConfig(steps=2, path_dropout={"memory": 0.5, "bypass": 0.5}, progress=False))
    assert res.config["path_dropout"] == {"memory": 0.5, "bypass": 0.5}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
