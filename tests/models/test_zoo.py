"""The model zoo's recipes are valid and the committed index.json lists the committed
checkpoints (the build and the index's numbers: tests/cli/test_zoo_build.py)."""
from __future__ import annotations

import json

import pytest

from mnemoscope.models import zoo
from mnemoscope.models.checkpoints import inspect_checkpoint
from mnemoscope.models.tasks import make_task

ZOO = zoo.default_zoo_dir()



@pytest.fixture(scope="module")
def index() -> dict:
    return zoo.load_index(ZOO)


def test_recipes_are_valid_and_distinct():
    names = [r.name for r in zoo.RECIPES]
    assert len(names) == len(set(names))
    for recipe in zoo.RECIPES:
        zoo.check_recipe(recipe)
        assert recipe.shows
        json.dumps(recipe.describe())  # recipes are data


def test_required_contents():
    by_arch_task = {(r.arch, r.task["name"]) for r in zoo.RECIPES}
    assert {("ntm", "copy"), ("dnc", "associative_recall"), ("sequence", "mqar")} <= by_arch_task
    rules = {r.config.get("rule") for r in zoo.RECIPES if r.task["name"] == "mqar" and r.config.get("blocks", []).count("memory") == 2}
    assert {"linear", "delta", "gated_delta"} <= rules
    windows = {r.remedies.get("window", r.config.get("window")) for r in zoo.RECIPES if "attention" in r.config.get("blocks", [])}
    assert len(windows) >= 2
    assert any(r.series >= 8 for r in zoo.RECIPES)
    # trained Hugging Face hybrids: a Gated DeltaNet + attention and an SSM + attention model on MQAR
    hf_types = {r.config["hf_config"]["model_type"] for r in zoo.RECIPES if r.arch == "hf" and r.task["name"] == "mqar"}
    assert {"qwen3_next", "bamba"} <= hf_types
    assert any(r.pair and r.remedies.get("reconstruction_loss") for r in zoo.RECIPES)


def test_bad_recipes_are_refused():
    good = zoo.RECIPES[0]
    import dataclasses

    with pytest.raises(ValueError, match="unknown remedies"):
        zoo.check_recipe(dataclasses.replace(good, remedies={"dropout_everything": 1}))
    with pytest.raises(ValueError, match="not TrainConfig options"):
        zoo.check_recipe(dataclasses.replace(good, train={**good.train, "epochs": 3}))
    with pytest.raises(ValueError, match="not TrainConfig options"):  # the build sets these, not the recipe
        zoo.check_recipe(dataclasses.replace(good, train={**good.train, "out_dir": "/tmp"}))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        zoo.check_recipe(dataclasses.replace(good, train={**good.train, "batch_size": 0}))
    with pytest.raises(ValueError, match="only in remedies"):
        zoo.check_recipe(dataclasses.replace(good, name="x", pair=good.name, seed=good.seed + 1,
                                             remedies={"bypass_dropout": 0.5}))
    with pytest.raises(ValueError, match="no zoo recipe"):
        zoo.get_recipe("nope")


def test_index_lists_every_recipe_and_existing_files(index):
    finals = {e["recipe"] for e in index["checkpoints"] if e["final"]}
    assert finals == {r.name for r in zoo.RECIPES}
    on_disk = {p.name for p in ZOO.glob("*.safetensors")}
    listed = [e["file"] for e in index["checkpoints"]]
    assert len(listed) == len(set(listed)) and set(listed) == on_disk
    total = sum((ZOO / f).stat().st_size for f in listed)
    assert total < 8e6, f"the zoo has grown to {total / 1e6:.1f} MB"
    for entry in index["checkpoints"]:
        meta = inspect_checkpoint(ZOO / entry["file"])
        assert (meta.name, meta.step, meta.arch, meta.task) == (entry["name"], entry["step"], entry["arch"], entry["task"])
        assert meta.extra["zoo"]["recipe"] == entry["recipe"]
    for recipe in zoo.RECIPES:
        if recipe.series:
            steps = [e["step"] for e in index["checkpoints"] if e["recipe"] == recipe.name]
            assert len(steps) == recipe.series  # every steps/series; the final one stands for the last
            assert steps[1:] == sorted(steps[1:]) and steps[0] == max(steps)


def test_a_remedy_flips_decorative_to_functional(index):
    final = {e["recipe"]: e for e in index["checkpoints"] if e["final"]}
    flips = [(r.pair, r.name) for r in zoo.RECIPES
             if r.pair and final[r.pair]["reliance"]["verdict"] == "decorative"
             and final[r.name]["reliance"]["verdict"] == "functional"]
    assert flips, "no pair of recipes that differ only in a remedy flips from decorative to functional"


def test_recipe_tasks_build():
    for recipe in zoo.RECIPES:
        task = make_task(recipe.task)
        assert task.sample(2, seed=0).inputs.shape[0] == 2


def test_recipe_train_config():
    recipe = zoo.RECIPES[0]
    config = recipe.train_config(out_dir="/tmp/x", checkpoint_every=10)
    assert config.seed == recipe.seed and config.steps == recipe.train["steps"] and config.checkpoint_every == 10
    assert config.lr == recipe.train["lr"] and config.eval_params == recipe.train["eval_params"]
