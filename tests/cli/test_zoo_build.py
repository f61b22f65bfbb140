"""Building the zoo (cli/zoo_build.py): a build is reproducible, the committed index.json says
what the committed checkpoints give, and `mnemoscope zoo` lists it."""
from __future__ import annotations

import json

import pytest
import torch

from mnemoscope.cli import build_parser, main, zoo_build
from mnemoscope.cli.commands import analyze
from mnemoscope.models import zoo
from mnemoscope.models.checkpoints import load_checkpoint

ZOO = zoo.default_zoo_dir()
SCORE_TOLERANCE = 0.03  # same machine: exact; other torch builds: tiny float differences


@pytest.fixture(scope="module")
def index() -> dict:
    return zoo.load_index(ZOO)


def test_index_is_analysed_with_the_analyze_command_defaults(index):
    args = build_parser().parse_args(["analyze", "x.safetensors"])
    assert (args.samples, args.seed) == (analyze.DEFAULT_SAMPLES, analyze.DEFAULT_SEED)
    assert index["analyze"] == {"samples": zoo_build.ANALYZE_SAMPLES, "seed": zoo_build.ANALYZE_SEED}
    assert index["analyze"] == {"samples": args.samples, "seed": args.seed}


def _checked(index):
    """Every final checkpoint, plus the first, middle and last of each training series."""
    out = []
    for entry in index["checkpoints"]:
        if entry["final"]:
            out.append(entry)
    series = [e for e in index["checkpoints"] if not e["final"]]
    for name in {e["recipe"] for e in series}:
        run = [e for e in series if e["recipe"] == name]
        out += [run[0], run[len(run) // 2], run[-1]]
    return out


def test_index_numbers_match_the_committed_checkpoints(index):
    for entry in _checked(index):
        got = zoo_build.analyze_numbers(ZOO / entry["file"], samples=index["analyze"]["samples"],
                                  seed=index["analyze"]["seed"], full=False)
        want = entry
        where = entry["file"]
        assert got["reliance"]["verdict"] == want["reliance"]["verdict"], where
        assert got["reliance"]["score"] == pytest.approx(want["reliance"]["score"], abs=SCORE_TOLERANCE), where
        assert got["metric"]["clean"] == pytest.approx(want["metric"]["clean"], rel=0.02, abs=0.02), where
        assert got["reliance"]["prob_change"] == pytest.approx(want["reliance"]["prob_change"], abs=0.01), where


def test_full_analyze_gives_the_index_numbers(index):
    # the index is written from the full `analyze` report; the test above recomputes only the
    # verdict, so check once on the smallest checkpoint that both agree
    entry = min(index["checkpoints"], key=lambda e: (ZOO / e["file"]).stat().st_size)
    full = zoo_build.analyze_numbers(ZOO / entry["file"], full=True)
    assert full["reliance"]["verdict"] == entry["reliance"]["verdict"]
    assert full["reliance"]["score"] == pytest.approx(entry["reliance"]["score"], abs=SCORE_TOLERANCE)


def test_build_is_reproducible_and_only_keeps_other_entries(tmp_path, monkeypatch):
    tiny = zoo.Recipe(
        name="tiny-ntm", arch="ntm", config={"controller_size": 8, "memory_slots": 4, "memory_width": 4},
        task={"name": "copy", "params": {"bits": 3, "min_length": 1, "max_length": 2}},
        train={"steps": 4, "batch_size": 4, "eval_size": 4}, series=2, shows="a test",
        remedies={"reconstruction_loss": 0.5, "reconstruction_horizon": 2})
    other = zoo.Recipe(
        name="tiny-seq", arch="sequence", config={"d_model": 8, "heads": 2, "blocks": ["memory", "mlp"]},
        task={"name": "mqar", "params": {"vocab_size": 16, "seq_len": 16, "num_pairs": 2}},
        train={"steps": 2, "batch_size": 4, "eval_size": 4}, shows="a test")
    monkeypatch.setattr(zoo, "RECIPES", (tiny, other))
    monkeypatch.setattr(zoo_build, "ANALYZE_SAMPLES", 4)
    lines: list[str] = []
    index = zoo_build.build_zoo(tmp_path / "a", log=lines.append)
    # the series: every 2 steps, the final checkpoint standing for step 4
    assert [e["file"] for e in index["checkpoints"]] == [
        "tiny-ntm.safetensors", "tiny-ntm-step-000002.safetensors", "tiny-seq.safetensors"]
    assert [e["series"] for e in index["checkpoints"]] == ["tiny-ntm", "tiny-ntm", None]
    assert json.loads((tmp_path / "a" / "index.json").read_text()) == index
    assert any("tiny-ntm.safetensors" in line for line in lines)
    final = load_checkpoint(tmp_path / "a" / "tiny-ntm.safetensors")
    assert final.meta.extra["zoo"]["remedies"] == tiny.remedies
    assert "ReconstructionLoss" in final.meta.extra["train"]["extra_loss"]
    assert final.meta.step == 4 and load_checkpoint(tmp_path / "a" / "tiny-ntm-step-000002.safetensors").meta.step == 2

    again = zoo_build.build_zoo(tmp_path / "a", only=["tiny-ntm"], log=lines.append)
    assert [e["file"] for e in again["checkpoints"]] == [e["file"] for e in index["checkpoints"]]
    rebuilt = load_checkpoint(tmp_path / "a" / "tiny-ntm.safetensors")
    for key, value in final.model.state_dict().items():
        assert torch.equal(value, rebuilt.model.state_dict()[key]), key
    assert again["checkpoints"][0]["reliance"] == index["checkpoints"][0]["reliance"]


def test_zoo_cli_list(capsys, index):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for entry in index["checkpoints"]:
        assert entry["file"] in out
    assert main(["zoo", "list", "--recipes"]) == 0
    assert zoo.RECIPES[0].name in capsys.readouterr().out
    assert main(["zoo", "list", "--markdown"]) == 0
    table = capsys.readouterr().out
    finals = [e for e in index["checkpoints"] if e["final"]]
    main_table, _, layers = table.partition("| checkpoint | architecture (layer: mixer)")
    assert main_table.count("\n| `") == len(finals) and "Training series" in main_table
    # the per-layer table: one row per final checkpoint with per-layer necessity (the HF hybrids)
    assert layers.count("\n| `") == sum(bool(e["reliance"].get("layers")) for e in finals) >= 2
    assert main(["zoo", "build", "--only", "no-such-recipe"]) == 2
    assert "no zoo recipe" in capsys.readouterr().err
    # studies never land in the bundled zoo (its index must list exactly the recipes)
    assert main(["zoo", "build", "--only", zoo.STUDIES[0].name]) == 2
    assert "build them elsewhere" in capsys.readouterr().err
