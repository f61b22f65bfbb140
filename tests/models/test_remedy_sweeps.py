"""The remedies' committed sweep files (sweeps/remedy-*.toml): valid, at least 3 seeds against the
same model without the remedy, and runnable end to end (shrunk to a few steps) by the sweep runner."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mnemoscope.cli.sweep import run_sweep
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.sweep_spec import load_sweep, parse_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
# knob -> (the value meaning "without the remedy", the remedy's values)
REMEDY_KNOBS = {"remedy-bottleneck": ("remedies.bypass_bottleneck", 0.0),
                "remedy-bandit": ("train.curriculum", "none")}


@pytest.mark.parametrize("name", sorted(REMEDY_KNOBS))
def test_remedy_sweeps_compare_with_the_model_without_the_remedy(name):
    spec = load_sweep(SWEEPS / f"{name}.toml")
    knob, without = REMEDY_KNOBS[name]
    assert spec.name == name and len(spec.seeds) >= 3
    assert list(spec.knobs) == [knob] and without in spec.knobs[knob] and len(spec.knobs[knob]) >= 3
    assert spec.analysis.run == ["reliance"]  # necessity and sufficiency: the verdict
    assert len(spec.check()) == len(spec.seeds) * len(spec.knobs[knob])


def shrunk(name: str) -> str:
    """The sweep file with a tiny model, a few steps, one seed and a small analysis."""
    text = (SWEEPS / f"{name}.toml").read_text()
    text = re.sub(r"controller_size = \d+", "controller_size = 8", text)
    text = re.sub(r"steps = \d+", "steps = 4", text)
    text = re.sub(r"seeds = \[[^]]*\]", "seeds = [0]", text)
    return re.sub(r"samples = \d+", "samples = 4", text)


@pytest.mark.parametrize("name", sorted(REMEDY_KNOBS))
def test_remedy_sweeps_train_and_analyse_every_point(name, tmp_path):
    spec = parse_sweep(shrunk(name), f"{name} (shrunk)")
    results = run_sweep(spec, tmp_path, workers=1, log=lambda _: None)
    rows = results["rows"]
    knob, _ = REMEDY_KNOBS[name]
    assert [r[knob] for r in rows] == spec.knobs[knob]
    assert all(r["verdict"] for r in rows) and all(r.get("necessity") is not None for r in rows)
    for row, value in zip(rows, spec.knobs[knob]):
        meta = load_checkpoint(tmp_path / row["checkpoint"]).meta
        if knob == "remedies.bypass_bottleneck":  # the remedy is recorded where the checkpoint details show it
            assert meta.config.get("bypass_bottleneck") == (value or None)
        else:
            recorded = meta.extra["train"]["curriculum"]
            assert recorded == value
