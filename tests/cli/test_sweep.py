"""Sweeps (models/sweep_spec.py, cli/sweep.py, `mnemoscope sweep`): the file's validation, a
local run of the tiny sweep (2 controller sizes x 2 seeds, 40 steps each), resuming (in
process and after Ctrl-C to a real `mnemoscope sweep run`), and the Markdown report."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnemoscope import __version__, cli
from mnemoscope.cli.sweep import ROW_FIELDS, markdown_report, run_sweep
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.sweep_spec import SweepError, load_sweep, parse_sweep

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "sweeps" / "tiny.toml"
RESEARCH = ["ntm-controller-bypass", "hybrid-window", "state-capacity", "forgetting", "layer-order"]
BASE = """
name = "t"
seeds = [0]
[base]
arch = "ntm"
config = { controller_size = 4, memory_slots = 4, memory_width = 4 }
task = { name = "copy", params = { bits = 3, min_length = 1, max_length = 2 } }
train = { steps = 10, batch_size = 4 }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The tiny sweep run once with the local executor in this process (one worker)."""
    out = tmp_path_factory.mktemp("tiny")
    lines: list[str] = []
    results = run_sweep(load_sweep(TINY), out, workers=1, log=lines.append)
    return {"out": out, "results": results, "log": lines}


# -- the sweep file --------------------------------------------------------------------------

@pytest.mark.parametrize("extra, problem", [
    ('[knobs]\n"controller_size" = [1, 2]\n', "a path starts with one of"),
    ('[knobs]\n"config.controller_size" = []\n', "has no values"),
    ('[knobs]\n"config.controller_size" = [4, 4]\n', "repeats a value"),
    ('colour = "red"\n', "colour: Extra inputs are not permitted"),
    ('[analysis]\nrun = ["vibes"]\n', "unknown analyses ['vibes']"),
    ('[plot]\nx = "config.memory_slots"\n', "plot.x 'config.memory_slots' is not one of the knobs"),
])
def test_spec_errors_name_the_problem(extra, problem):
    text = BASE.replace('seeds = [0]\n', 'seeds = [0]\n' + extra) if not extra.startswith("[") else BASE + extra
    with pytest.raises(SweepError, match=None) as err:
        parse_sweep(text, "bad.toml")
    assert str(err.value).startswith("bad.toml: ") and problem in str(err.value)


def test_spec_rejects_bad_toml_names_and_seeds():
    with pytest.raises(SweepError, match="not valid TOML"):
        parse_sweep("name = ", "x.toml")
    with pytest.raises(SweepError, match="name"):
        parse_sweep(BASE.replace('name = "t"', 'name = "../etc"'))
    with pytest.raises(SweepError, match="seeds must be distinct"):
        parse_sweep(BASE.replace("seeds = [0]", "seeds = [1, 1]"))


def test_a_point_that_cannot_be_built_is_named():
    spec = parse_sweep(BASE + '[knobs]\n"config.memory_slots" = [4, 0]\n')
    with pytest.raises(SweepError, match=r"point config.memory_slots=0, seed=0: "):
        spec.check()
    spec = parse_sweep(BASE + '[knobs]\n"train.nonsense" = [1]\n')
    with pytest.raises(SweepError, match="not TrainConfig options"):
        spec.check()
    spec = parse_sweep(BASE + '[knobs]\n"eval.bits" = [0]\n')
    with pytest.raises(SweepError, match=r"point eval.bits=0, seed=0: copy: bits must be"):
        spec.check()


def test_keys_follow_the_recipe_seed_and_version():
    spec = parse_sweep(BASE.replace("seeds = [0]", "seeds = [0, 1]") + '[knobs]\n"eval.max_length" = [2, 3]\n')
    points = spec.points()
    assert len(points) == 4 and len({p.key for p in points}) == 4
    # the eval knob changes the analysis, not the training: two trainings for four points
    assert len({p.train_key for p in points}) == 2
    assert {p.seed for p in points if p.train_key == points[0].train_key} == {0}
    moved = parse_sweep(BASE.replace("steps = 10", "steps = 11").replace("seeds = [0]", "seeds = [0, 1]")
                        + '[knobs]\n"eval.max_length" = [2, 3]\n').points()
    assert {p.train_key for p in moved}.isdisjoint(p.train_key for p in points)


def test_base_can_start_from_a_zoo_recipe():
    spec = parse_sweep('name = "z"\n[base]\nrecipe = "ntm-copy-small-controller"\ntrain = { steps = 5 }\n')
    recipe = spec.points()[0].recipe
    assert recipe["arch"] == "ntm" and recipe["remedies"] == {"controller_size": 16} and recipe["train"] == {"steps": 5}


def test_the_committed_sweep_files_are_valid():
    for name in ["tiny", *RESEARCH]:
        spec = load_sweep(REPO / "sweeps" / f"{name}.toml")
        points = spec.check()
        assert spec.name == name and len(points) >= 4
        if name != "tiny":
            assert len(spec.seeds) >= 3, name  # every claim over at least 3 seeds


def test_cli_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + '[knobs]\n"wrong" = [1]\n')
    assert cli.main(["sweep", "run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnemoscope sweep: error: ") and "knobs" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


# -- a local run -------------------------------------------------------------------------------

def test_local_run_writes_points_checkpoints_table_and_figures(tiny):
    out, results = tiny["out"], tiny["results"]
    assert results["points_total"] == 4 and len(results["rows"]) == 4
    assert results["version"] == __version__ and results["knobs"] == ["config.controller_size"]
    rows = results["rows"]
    assert [(r["config.controller_size"], r["seed"]) for r in rows] == [(4, 0), (4, 1), (8, 0), (8, 1)]
    for row in rows:
        assert row["verdict"] in ("decorative", "partial", "functional", "redundant", "undetermined")
        assert 0.0 <= row["necessity"] <= 1.0 and row["necessity_lo"] <= row["necessity"] <= row["necessity_hi"]
        assert row["metric_name"] == "wrong_bits" and row["steps"] == 40
        ckpt = load_checkpoint(out / row["checkpoint"])
        assert ckpt.meta.config["controller_size"] == row["config.controller_size"]
        assert ckpt.meta.step == 40 and ckpt.meta.task["params"]["bits"] == 3
        point = json.loads((out / "points" / f"{row['key']}.json").read_text())
        assert point["recipe"]["config"]["controller_size"] == row["config.controller_size"]
        assert point["seed"] == row["seed"] and point["version"] == __version__
    assert len({r["checkpoint_sha256"] for r in rows}) == 4  # seeds and sizes give different weights
    table = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert list(table[0]) == ["key", "seed", "config.controller_size", *ROW_FIELDS]
    assert [t["verdict"] for t in table] == [r["verdict"] for r in rows]
    figures = json.loads((out / "figures.json").read_text())
    necessity = figures["necessity"]
    # one line per other-knob combination (none here: one), seeds as points with their intervals
    assert [t["mode"] for t in necessity["data"]] == ["markers", "lines+markers"]
    assert necessity["data"][0]["y"] == [r["necessity"] for r in rows]
    assert necessity["data"][1]["x"] == [4, 8]
    assert necessity["data"][1]["y"] == pytest.approx([(rows[0]["necessity"] + rows[1]["necessity"]) / 2,
                                                       (rows[2]["necessity"] + rows[3]["necessity"]) / 2])
    assert (out / "necessity.html").is_file() and (out / "plotly.min.js").is_file()


def test_a_second_run_skips_the_done_points_and_force_redoes_them(tiny, tmp_path):
    out = tmp_path / "again"
    spec = load_sweep(TINY)
    import shutil

    shutil.copytree(tiny["out"], out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    lines: list[str] = []
    results = run_sweep(spec, out, workers=1, log=lines.append)
    assert "4 points (4 done, 0 to run" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()} == before
    assert [r["key"] for r in results["rows"]] == [r["key"] for r in tiny["results"]["rows"]]
    # a point whose file is gone is redone from its checkpoint, not retrained
    gone = tiny["results"]["rows"][1]
    (out / "points" / f"{gone['key']}.json").unlink()
    ckpt_time = (out / gone["checkpoint"]).stat().st_mtime_ns
    lines.clear()
    again = run_sweep(spec, out, workers=1, log=lines.append)
    assert "(3 done, 1 to run" in lines[0] and (out / gone["checkpoint"]).stat().st_mtime_ns == ckpt_time
    assert again["rows"][1]["necessity"] == gone["necessity"] and again["rows"][1]["verdict"] == gone["verdict"]


def test_an_eval_knob_trains_once_and_evaluates_twice(tmp_path):
    spec = parse_sweep(BASE + '[knobs]\n"eval.max_length" = [1, 2]\n[analysis]\nsamples = 4\n')
    results = run_sweep(spec, tmp_path, workers=1, log=lambda _: None)
    rows = results["rows"]
    assert len(rows) == 2 and rows[0]["checkpoint"] == rows[1]["checkpoint"]
    assert len(list((tmp_path / "checkpoints").glob("*.safetensors"))) == 1


def test_a_failing_point_is_reported_and_the_next_run_retries_it(tmp_path, monkeypatch):
    from mnemoscope.cli import zoo_build

    real = zoo_build.train_recipe

    def diverge_on_seed_1(recipe, out_dir, **kw):
        if recipe.seed == 1:
            raise FloatingPointError("loss became nan at step 3")
        return real(recipe, out_dir, **kw)

    spec = parse_sweep(BASE.replace("seeds = [0]", "seeds = [0, 1]"))
    monkeypatch.setattr(zoo_build, "train_recipe", diverge_on_seed_1)
    lines: list[str] = []
    results = run_sweep(spec, tmp_path, workers=1, log=lines.append)
    assert [r["seed"] for r in results["rows"]] == [0]
    assert results["failed"] == [{"points": ["seed=1"], "error": "FloatingPointError: loss became nan at step 3"}]
    assert any("failed: seed=1: FloatingPointError" in line for line in lines)
    monkeypatch.setattr(zoo_build, "train_recipe", real)
    again = run_sweep(spec, tmp_path, workers=1, log=lines.append)
    assert [r["seed"] for r in again["rows"]] == [0, 1] and again["failed"] == []


def test_ctrl_c_stops_a_sweep_and_the_next_run_resumes(tmp_path):
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "mnemoscope.cli", "sweep", "run", str(TINY), "--out", str(out), "--workers", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list((out / "points").glob("*.json")):  # the first point written
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no point finished in 180 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        first_output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, first_output
    done = {p.name: p.read_bytes() for p in (out / "points").glob("*.json")}
    assert 1 <= len(done) < 4, first_output
    assert len(json.loads((out / "results.json").read_text())["rows"]) == len(done), first_output
    assert not list(out.rglob("*.tmp")), f"an interrupted write left a temporary file: {first_output}"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"4 points ({len(done)} done, {4 - len(done)} to run" in rerun.stdout
    assert {name: (out / "points" / name).read_bytes() for name in done} == done  # untouched
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 4


# -- the report --------------------------------------------------------------------------------

def test_report_markdown_aggregates_over_seeds(tiny, capsys):
    out = tiny["out"]
    assert cli.main(["sweep", "report", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert text == markdown_report(tiny["results"])
    lines = text.splitlines()
    assert lines[0] == "#### Sweep `tiny`"
    header = next(i for i, line in enumerate(lines) if line.startswith("| `config.controller_size`"))
    assert lines[header] == "| `config.controller_size` | seeds | verdicts | necessity | sufficiency | wrong_bits |"
    body = lines[header + 2:]
    assert [row.split(" | ")[0] for row in body] == ["| 4", "| 8"]
    for row, size in zip(body, (4, 8)):
        mine = [r for r in tiny["results"]["rows"] if r["config.controller_size"] == size]
        assert row.split(" | ")[1] == "2" and "/2" in row.split(" | ")[2]
        mean = sum(r["necessity"] for r in mine) / 2
        assert row.split(" | ")[3].startswith(f"{mean:.2f}")


def test_report_of_a_folder_without_results_is_an_error(tmp_path, capsys):
    assert cli.main(["sweep", "report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_default_output_is_under_the_data_directory(tmp_path, monkeypatch):
    from mnemoscope.cli.sweep import default_out

    monkeypatch.setenv("MNEMOSCOPE_DATA_DIR", str(tmp_path / "data"))
    assert default_out(load_sweep(TINY)) == tmp_path / "data" / "sweeps" / "tiny"
    assert os.environ["MNEMOSCOPE_DATA_DIR"].endswith("data")


def test_report_keeps_knob_values_exact():
    # 0.001 and 0.0 are two points of a sweep: rounding them to two places would merge their rows
    from mnemoscope.cli.sweep import _knob

    assert [_knob(v) for v in (0.001, 0.0, 16, "linear", ["memory", "mlp"], None)] == \
        ["0.001", "0.0", "16", "linear", '["memory","mlp"]', "-"]
