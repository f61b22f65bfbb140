"""`mnemoscope zoo seeds`: each recipe's verdict over the zoo sweep's seeds goes into the index,
and the README's zoo table shows how many seeds agree."""
from __future__ import annotations

import json
import shutil

import pytest

from mnemoscope.cli import main
from mnemoscope.cli.commands.zoo import markdown_table
from mnemoscope.cli.zoo_build import attach_seeds, seed_summary
from mnemoscope.models import zoo


def row(recipe: str, seed: int, verdict: str, necessity: float) -> dict:
    return {"recipe": recipe, "seed": seed, "verdict": verdict, "necessity": necessity, "sufficiency": 1.0}


def test_a_summary_counts_the_seeds_that_agree_with_the_committed_verdict():
    rows = [row("a", 0, "functional", 0.8), row("a", 1, "functional", 0.6), row("a", 2, "redundant", 0.1)]
    got = seed_summary(rows, "functional")
    assert got["n"] == 3 and got["seeds"] == [0, 1, 2] and got["agree"] == 2
    assert got["verdicts"] == {"functional": 2, "redundant": 1}
    assert got["necessity"] == {"min": 0.1, "max": 0.8, "mean": pytest.approx(0.5)}
    assert seed_summary(rows)["agree"] == 2  # seed 0's verdict by default


def test_zoo_seeds_writes_the_index_and_the_table_shows_it(tmp_path, capsys):
    index = zoo.load_index()
    final = [e for e in index["checkpoints"] if e["final"]]
    first, second = final[0], final[1]
    verdict = first["reliance"]["verdict"]
    other = "decorative" if verdict != "decorative" else "functional"
    rows = [row(first["recipe"], 0, verdict, 0.7), row(first["recipe"], 1, verdict, 0.75),
            row(first["recipe"], 2, other, 0.2)]
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.json").write_text(json.dumps({"name": "zoo", "version": "x", "seeds": [0, 1, 2], "rows": rows}))
    shutil.copy(zoo.default_zoo_dir() / "index.json", tmp_path / "index.json")
    assert main(["zoo", "seeds", "--results", str(results), "--dir", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "index.json").read_text())
    entries = {e["file"]: e for e in written["checkpoints"]}
    assert entries[first["file"]]["seeds"]["agree"] == 2 and entries[first["file"]]["seeds"]["n"] == 3
    assert entries[second["file"]]["seeds"] is None  # no rows for it
    assert written["seeds_from"]["sweep"] == "zoo"
    table = markdown_table(written)
    assert f"| `{first['name']}` |" in table and "| 2/3 (0.20-0.75) |" in table
    assert first["recipe"] in capsys.readouterr().out


def test_attach_leaves_series_checkpoints_without_seeds():
    index = json.loads(json.dumps(zoo.load_index()))
    recipe = next(e["recipe"] for e in index["checkpoints"] if not e["final"])
    attach_seeds(index, {"rows": [row(recipe, 0, "functional", 0.7)]})
    assert all(e["seeds"] is None for e in index["checkpoints"] if not e["final"])
    assert any(e["seeds"] for e in index["checkpoints"] if e["final"])


def test_findings_say_whether_a_claim_holds_over_three_seeds():
    from mnemoscope.cli.commands.zoo import FINDINGS, findings_table

    claim, wants, _ = FINDINGS[0]
    agreeing = [{**row(name, s, want or "functional", 0.5), "metric_name": "wrong_bits", "metric": 0.0, "recipe": name}
                for name, want in wants.items() for s in (0, 1, 2)]
    results = {"knobs": ["recipe"], "rows": agreeing}
    line = next(r for r in findings_table(results).splitlines() if r.startswith(f"| {claim}"))
    assert "**reproduces** over 3 seeds" in line and "3/3" in line
    flipped = [dict(r, verdict="redundant") if r["seed"] == 2 else r for r in agreeing]
    line = next(r for r in findings_table({**results, "rows": flipped}).splitlines() if r.startswith(f"| {claim}"))
    assert "does not hold over seeds" in line
    line = next(r for r in findings_table({**results, "rows": agreeing[:-1]}).splitlines() if r.startswith(f"| {claim}"))
    assert "not yet over 3 seeds" in line and "2/3" in line


def test_the_committed_index_holds_the_committed_sweep_results():
    """`mnemoscope zoo seeds` was run on the committed results: the index says what they say."""
    from mnemoscope.cli.zoo_build import default_seed_results

    results = json.loads((default_seed_results() / "results.json").read_text())
    index = zoo.load_index()
    expected = attach_seeds(json.loads(json.dumps(index)), results)
    assert [e.get("seeds") for e in index["checkpoints"]] == [e["seeds"] for e in expected["checkpoints"]]
    for e in index["checkpoints"]:
        if e.get("seeds"):  # seed 0 of the sweep is the committed checkpoint: same verdict
            assert 0 in e["seeds"]["seeds"] and e["seeds"]["agree"] >= 1


def test_every_zoo_recipe_has_three_seeds_that_agree():
    finals = [e for e in zoo.load_index()["checkpoints"] if e["final"]]
    assert {e["recipe"] for e in finals} == {r.name for r in zoo.RECIPES}
    for e in finals:
        assert e["seeds"]["n"] >= 3 and e["seeds"]["agree"] == e["seeds"]["n"], (e["recipe"], e["seeds"])
