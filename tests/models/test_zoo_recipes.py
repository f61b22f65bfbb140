"""Every committed zoo checkpoint is what its recipe says: the same model config, task,
training options, seed and remedies, read from the checkpoint's own metadata. And every
recipe is a point of the committed zoo sweep (sweeps/zoo.toml), trained over 3 seeds."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnemoscope.models import zoo
from mnemoscope.models.checkpoints import inspect_checkpoint
from mnemoscope.models.registry import make_config
from mnemoscope.models.sweep_spec import SweepError, load_sweep, parse_sweep
from mnemoscope.models.tasks import make_task
from mnemoscope.models.training import _saved_config

ZOO = zoo.default_zoo_dir()
ZOO_SWEEP = Path(__file__).resolve().parents[2] / "sweeps" / "zoo.toml"
COMMITTED = sorted(e["file"] for e in zoo.load_index(ZOO)["checkpoints"])


@pytest.mark.parametrize("file", COMMITTED)
def test_a_committed_checkpoint_equals_its_recipe(file):
    meta = inspect_checkpoint(ZOO / file)
    built = meta.extra["zoo"]
    recipe = zoo.get_recipe(built["recipe"])
    task = make_task(recipe.task)
    assert meta.arch == recipe.arch
    assert meta.task == task.spec()
    # the stored config as the checkpoint loads it (fields it predates take their old meaning)
    assert make_config(meta.arch, meta.config, stored=True) == make_config(recipe.arch, recipe.model_config(task))
    assert built["remedies"] == recipe.remedies and built["pair"] == recipe.pair
    assert built["final"] == (file == f"{recipe.name}.safetensors")
    stored = dict(meta.extra["train"])
    assert (stored.pop("extra_loss") is not None) == ("reconstruction_loss" in recipe.remedies)
    stored.pop("record")
    expected = _saved_config(recipe.train_config(), torch.device("cpu"), None, [])
    assert stored == {k: expected[k] for k in stored}
    assert stored["seed"] == recipe.seed == 0
    if not built["final"]:
        assert built["series"] == recipe.name and meta.step % (recipe.train["steps"] // recipe.series) == 0


def test_every_recipe_is_a_point_of_the_zoo_sweep_over_three_seeds():
    spec = load_sweep(ZOO_SWEEP)
    assert spec.knobs["recipe"] == [r.name for r in zoo.RECIPES]
    assert len(spec.seeds) >= 3 and 0 in spec.seeds
    # the zoo's index is analysed with the same options
    index = zoo.load_index(ZOO)
    assert {"samples": spec.analysis.samples, "seed": spec.analysis.seed} == index["analyze"]
    points = spec.check()
    assert len(points) == len(zoo.RECIPES) * len(spec.seeds)
    for point in points:
        recipe = zoo.get_recipe(point.knobs["recipe"])
        assert point.recipe == {"arch": recipe.arch, "config": recipe.config, "task": recipe.task,
                                "train": recipe.train, "remedies": recipe.remedies}
        trained = point.zoo_recipe()
        assert (trained.arch, trained.config, trained.task, trained.train, trained.remedies, trained.seed) == \
            (recipe.arch, recipe.config, recipe.task, recipe.train, recipe.remedies, point.seed)


def test_a_recipe_knob_starts_from_each_recipe_and_other_knobs_apply_on_top():
    spec = parse_sweep('name = "r"\nseeds = [0]\n[base]\n[knobs]\n'
                       'recipe = ["mqar-deltanet", "hybrid-short-window"]\n"train.steps" = [5, 10]\n')
    points = spec.check()
    assert [(p.knobs["recipe"], p.recipe["train"]["steps"]) for p in points] == \
        [("mqar-deltanet", 5), ("mqar-deltanet", 10), ("hybrid-short-window", 5), ("hybrid-short-window", 10)]
    assert points[2].recipe["remedies"] == {"window": 4}
    assert len({p.train_key for p in points}) == 4
    with pytest.raises(SweepError, match="no zoo recipe"):
        parse_sweep('name = "r"\n[base]\n[knobs]\nrecipe = ["no-such-recipe"]\n').check()


def test_no_zoo_model_has_a_collapsed_memory():
    """The index's warnings are the checkpoints' own (tests/cli/test_zoo_build.py recomputes them)."""
    index = zoo.load_index(ZOO)
    assert [e["file"] for e in index["checkpoints"] if "collapsed_memory" in e["reliance"]["warnings"]] == []
