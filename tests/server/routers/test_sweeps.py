"""GET /api/sweeps, /api/sweeps/{id} and a point's checkpoint file, on the output of a real
`run_sweep` of the tiny sweep placed under the app's data directory."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from mnemoscope.cli.sweep import run_sweep
from mnemoscope.models.sweep_spec import load_sweep

TINY = Path(__file__).resolve().parents[3] / "sweeps" / "tiny.toml"


@pytest.fixture(scope="module")
def tiny_output(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    run_sweep(load_sweep(TINY), out, workers=1, log=lambda _: None)
    return out


@pytest.fixture
def sweeps_dir(settings, tiny_output) -> Path:
    """The tiny sweep under <data_dir>/sweeps/tiny, as `mnemoscope sweep run` puts it."""
    target = settings.data_dir / "sweeps" / "tiny"
    shutil.copytree(tiny_output, target)
    return target


def test_no_sweeps_is_an_empty_list(client):
    r = client.get("/api/sweeps")
    assert r.status_code == 200 and r.json() == []


def test_list_shows_each_sweep_with_its_progress(client, sweeps_dir):
    (sweeps_dir.parent / "not-a-sweep").mkdir()  # a folder without results.json is not listed
    partial = sweeps_dir.parent / "half"
    shutil.copytree(sweeps_dir, partial)
    results = json.loads((partial / "results.json").read_text())
    results.update(name="half", rows=results["rows"][:2])
    (partial / "results.json").write_text(json.dumps(results))
    listed = client.get("/api/sweeps").json()
    assert [s["id"] for s in listed] == ["half", "tiny"]
    half, tiny = listed
    assert (half["points_done"], half["points_total"]) == (2, 4)
    assert (tiny["points_done"], tiny["points_total"]) == (4, 4)
    assert tiny["knobs"] == ["config.controller_size"] and tiny["x"] == "config.controller_size"
    assert tiny["seeds"] == [0, 1] and tiny["description"].startswith("machinery check")


def test_one_sweep_has_its_table_and_figures(client, sweeps_dir):
    r = client.get("/api/sweeps/tiny")
    assert r.status_code == 200, r.text
    body = r.json()
    on_disk = json.loads((sweeps_dir / "results.json").read_text())
    assert body["columns"] == on_disk["columns"] and body["columns"][:3] == ["key", "seed", "config.controller_size"]
    assert [row["key"] for row in body["rows"]] == [row["key"] for row in on_disk["rows"]]
    assert all(row["checkpoint_id"] is None for row in body["rows"])  # nothing in the store yet
    assert set(body["figures"]) >= {"necessity", "metric"}
    necessity = body["figures"]["necessity"]
    assert necessity["layout"]["xaxis"]["title"]["text"] == "config.controller_size"
    assert necessity["data"][0]["y"] == [row["necessity"] for row in on_disk["rows"]]


def test_a_point_links_to_its_checkpoint_once_the_bytes_are_in_the_store(client, sweeps_dir):
    row = json.loads((sweeps_dir / "results.json").read_text())["rows"][2]
    data = (sweeps_dir / row["checkpoint"]).read_bytes()
    uploaded = client.post("/api/checkpoints", files={"file": ("point.safetensors", io.BytesIO(data))})
    assert uploaded.status_code == 201, uploaded.text
    rows = client.get("/api/sweeps/tiny").json()["rows"]
    assert [r["checkpoint_id"] for r in rows] == [None, None, uploaded.json()["id"], None]


def test_a_points_checkpoint_file_downloads(client, sweeps_dir):
    row = json.loads((sweeps_dir / "results.json").read_text())["rows"][0]
    filename = row["checkpoint"].rsplit("/", 1)[-1]
    r = client.get(f"/api/sweeps/tiny/checkpoints/{filename}")
    assert r.status_code == 200 and r.content == (sweeps_dir / row["checkpoint"]).read_bytes()
    assert r.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("path", [
    "/api/sweeps/nope", "/api/sweeps/..%2F..%2Fetc", "/api/sweeps/.hidden",
    "/api/sweeps/tiny/checkpoints/results.json", "/api/sweeps/tiny/checkpoints/..%2Fresults.json",
    "/api/sweeps/tiny/checkpoints/0000000000000000.safetensors",
])
def test_unknown_sweeps_and_files_are_404(client, sweeps_dir, path):
    r = client.get(path)
    assert r.status_code == 404 and r.json()["detail"]
