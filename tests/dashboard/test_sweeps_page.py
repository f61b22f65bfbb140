"""The Sweeps page's callback logic with a fake client: the sweep list (the URL's choice, the
first, an unknown one), the figure, the point table and its checkpoint links, errors."""
from __future__ import annotations

import copy

from dash import no_update

from mnemoscope.dashboard import app as dash_app
from mnemoscope.dashboard.api import ApiError
from mnemoscope.dashboard.context import Context
from mnemoscope.dashboard.pages import sweeps

CTX = Context(api_path="/root/api")
SUMMARY = {"id": "ntm-size", "name": "ntm-size", "description": "controller size", "knobs": ["config.controller_size"],
           "x": "config.controller_size", "seeds": [0, 1], "points_total": 4, "points_done": 2, "version": "0.1.0",
           "updated_at": "2026-01-01T00:00:00Z"}
ROWS = [
    {"key": "k1", "seed": 0, "config.controller_size": 16, "verdict": "functional", "necessity": 0.9,
     "necessity_lo": 0.8, "necessity_hi": 1.0, "sufficiency": None, "metric_name": "wrong_bits", "metric": 0.0,
     "checkpoint": "checkpoints/aaaaaaaaaaaaaaaa.safetensors", "checkpoint_id": "c1"},
    {"key": "k2", "seed": 1, "config.controller_size": 16, "verdict": "decorative", "necessity": 0.05,
     "necessity_lo": 0.0, "necessity_hi": 0.1, "sufficiency": 0.2, "metric_name": "wrong_bits", "metric": 0.5,
     "checkpoint": "checkpoints/bbbbbbbbbbbbbbbb.safetensors", "checkpoint_id": None},
]
FIGURE = {"data": [{"type": "scatter", "mode": "markers", "x": [16, 16], "y": [0.9, 0.05]}],
          "layout": {"title": {"text": "necessity"}, "xaxis": {"title": {"text": "config.controller_size"}}}}
DETAIL = {**SUMMARY, "columns": ["key", "seed", "config.controller_size"], "rows": ROWS, "figures": {"necessity": FIGURE}}


class FakeSweepsApi:
    """Answers the two read-only routes the page uses; records every request."""

    def __init__(self, sweeps=None, detail=None, fail: str | None = None):
        self.sweeps = sweeps if sweeps is not None else [SUMMARY]
        self.detail = detail if detail is not None else DETAIL
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def request(self, method, path, **_):
        self.calls.append((method, path))
        if self.fail:
            raise ApiError(self.fail, 503)
        if path == "/api/sweeps":
            return copy.deepcopy(self.sweeps)
        if path == f"/api/sweeps/{self.detail['id']}":
            return copy.deepcopy(self.detail)
        raise ApiError("no sweep (HTTP 404)", 404)


def test_the_page_is_registered_and_routed():
    assert sweeps in dash_app.PAGES
    assert dash_app.page_for("/dashboard/sweeps") is sweeps
    layout = str(sweeps.layout({"sweep": "ntm-size", "measure": "metric"}, CTX).to_plotly_json())
    assert "sweeps-figure" in layout and "'value': 'metric'" in layout


def test_list_picks_the_urls_sweep_or_the_first():
    two = [SUMMARY, {**SUMMARY, "id": "other", "name": "other"}]
    out = sweeps.list_step(FakeSweepsApi(sweeps=two), "other")
    assert out["value"] == "other" and out["error"] is None
    assert out["options"][0] == {"label": "ntm-size (2/4 points)", "value": "ntm-size"}
    assert sweeps.list_step(FakeSweepsApi(sweeps=two), None)["value"] == "ntm-size"
    missing = sweeps.list_step(FakeSweepsApi(sweeps=two), "gone")
    assert missing["value"] == "ntm-size" and "no sweep 'gone'" in missing["error"]


def test_view_shows_the_figure_table_and_checkpoint_links():
    api = FakeSweepsApi()
    out = sweeps.view_step(api, CTX, "ntm-size", "necessity")
    assert api.calls == [("GET", "/api/sweeps/ntm-size")] and out["error"] is None
    figure = out["figure"]
    assert figure["data"] == FIGURE["data"]
    assert figure["layout"]["xaxis"]["title"]["text"] == "config.controller_size"  # the server's, restyled
    assert figure["layout"]["height"] == 440
    table = out["table"].to_plotly_json()
    text = str(table)
    rows = out["table"].children[1].children
    assert [r.to_plotly_json()["props"]["data-point"] for r in rows] == ["k1", "k2"]
    # in the store: Explore; always: the file from the sweep's folder
    assert "/dashboard/explore?checkpoint=c1" in text
    assert "/root/api/sweeps/ntm-size/checkpoints/aaaaaaaaaaaaaaaa.safetensors" in text
    assert "/root/api/sweeps/ntm-size/checkpoints/bbbbbbbbbbbbbbbb.safetensors" in text
    assert text.count("Explore") == 1
    assert "ms-badge-functional" in text and "ms-badge-decorative" in text
    assert "2 of 4 points" in str(out["summary"].to_plotly_json())


def test_a_measure_without_values_says_so():
    out = sweeps.view_step(FakeSweepsApi(), CTX, "ntm-size", "sufficiency")
    assert out["figure"]["data"] == []
    assert "no memory sufficiency" in out["figure"]["layout"]["annotations"][0]["text"]


def test_no_sweeps_and_api_errors_are_shown_not_raised():
    empty = sweeps.view_step(FakeSweepsApi(sweeps=[]), CTX, None, None)
    assert empty["figure"] is no_update and "mnemoscope sweep run" in str(empty["summary"].to_plotly_json())
    down = sweeps.view_step(FakeSweepsApi(fail="cannot reach the API"), CTX, "ntm-size", "necessity")
    assert down["error"] == "cannot reach the API" and down["table"] is None
    listed = sweeps.list_step(FakeSweepsApi(fail="cannot reach the API"), None)
    assert listed == {"options": [], "value": None, "error": "cannot reach the API"}
