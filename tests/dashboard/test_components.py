"""Shared pieces: export, formatting, badges, progress, form parsing and the run-and-poll
job logic every analysis page uses."""
from __future__ import annotations

import csv
import io

import pytest

from mnemoscope.dashboard import components as c
from mnemoscope.dashboard.pages import common, jobpage


# -- export ------------------------------------------------------------------------------------

def test_csv_header_is_the_union_of_keys_and_none_is_blank():
    text = c.to_csv([{"t": 0, "a": 1.5}, {"t": 1, "b": None, "a": 2}])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["t", "a", "b"], ["0", "1.5", ""], ["1", "2", ""]]


def test_flatten_nested_results():
    flat = c.flatten({"reliance": {"score": 0.9, "ci95": [0.8, 1.0]}, "sites": [{"name": "r"}]})
    assert flat == {"reliance.score": 0.9, "reliance.ci95": "0.8 1.0", "sites.0.name": "r"}


def test_export_payload_holds_json_and_csv():
    payload = c.export_payload("ablation", {"x": 1}, [{"t": 0, "m": 2}])
    assert payload == {"filename": "ablation", "json": {"x": 1}, "csv": "t,m\n0,2\n"}


# -- formatting, badges, progress ---------------------------------------------------------------

@pytest.mark.parametrize("value, out", [(None, "n/a"), (float("nan"), "n/a"), (12345, "12,345"), (0.5, "0.500"),
                                        (1e-5, "1.00e-05"), (2.5e7, "2.5e+07"), ("x", "x")])
def test_fmt(value, out):
    assert c.fmt(value) == out


def test_fmt_bytes():
    assert c.fmt_bytes(512) == "512 B"
    assert c.fmt_bytes(3 * 1024 * 1024) == "3.0 MB"


def test_verdict_badge_classes_and_text():
    badge = c.verdict_badge("functional", 0.93, [0.88, 0.97])
    assert "ms-badge-functional" in badge.className
    assert badge.children == "functional 0.93 [0.88, 0.97]"
    assert "not analysed" in c.verdict_badge(None).children


def test_progress_view_reports_status_and_fraction():
    bar = c.progress_view({"status": "running", "progress": 0.42})
    assert bar.className.endswith("ms-progress-running")
    fill, label = bar.children
    assert fill.style["width"] == "42.0%" and label.children == "running 42%"
    done = c.progress_view({"status": "done", "progress": 0.2})
    assert done.children[0].style["width"] == "100.0%"


def test_error_box_is_an_alert_and_empty_without_message():
    assert c.error_box(None) is None
    box = c.error_box("no checkpoint with id 'x'")
    assert box.role == "alert" and "no checkpoint" in box.children[1].children


def test_get_path_tries_alternatives():
    data = {"metric": {"clean": 0.5}, "reliance": {"ci95": [0.1, 0.2]}}
    assert c.get_path(data, "metric.name", "reliance.ci95.1") == 0.2
    assert c.get_path(data, "nope", default=7) == 7


def test_dict_figure_helpers():
    assert c.axis_key("y", 0) == "yaxis" and c.axis_key("y", 2) == "yaxis3" and c.axis_ref("x", 1) == "x2"
    doms = c.stack_domains(3, gap=0.1)
    assert doms[0][1] == pytest.approx(1.0) and doms[-1][0] == pytest.approx(0.0)
    assert all(lo < hi for lo, hi in doms) and doms[0][0] > doms[1][1]
    layout = c.base_layout(height=200, yaxis={"type": "log"})
    assert layout["yaxis"]["type"] == "log" and layout["yaxis"]["gridcolor"]  # merged, not replaced


# -- form parsing ------------------------------------------------------------------------------

def test_to_int():
    assert common.to_int("7", name="seed") == 7
    assert common.to_int("", default=3) == 3
    assert common.to_int(4.0) == 4
    with pytest.raises(ValueError, match="seed must be a whole number"):
        common.to_int("1.5", name="seed")
    with pytest.raises(ValueError, match="length must be at least 1"):
        common.to_int(0, minimum=1, name="length")


def test_parse_timesteps():
    assert common.parse_timesteps("all") is None
    assert common.parse_timesteps("") is None
    assert common.parse_timesteps("3, 5-7 10") == [3, 5, 6, 7, 10]
    with pytest.raises(ValueError, match="backwards"):
        common.parse_timesteps("7-3")
    with pytest.raises(ValueError, match="not a number"):
        common.parse_timesteps("three")


@pytest.mark.parametrize("task, expected", [
    ({"name": "copy", "params": {"min_length": 1, "max_length": 20}}, {"min_length": 8, "max_length": 8}),
    ({"name": "associative_recall", "params": {"min_items": 2, "max_items": 6}}, {"min_items": 8, "max_items": 8}),
    ({"name": "mqar", "params": {"seq_len": 64}}, {"seq_len": 8}),
    ({"name": "mystery", "params": {"size": 3}}, {}),
])
def test_length_params(task, expected):
    assert common.length_params(task, 8) == expected
    assert common.length_params(task, None) == {}


# -- run and poll jobs --------------------------------------------------------------------------

def test_run_starts_jobs_and_polls_to_results(fake_api):
    api = fake_api(jobs={
        "ablations-c1": [{"status": "queued", "progress": 0.0}, {"status": "running", "progress": 0.5},
                         {"status": "done", "progress": 1.0, "result": {"kind": "ablations", "data": [{"metric": 1}]}}],
        "report-c1": [{"status": "done", "progress": 1.0, "result": {"kind": "report", "data": {"reliance": {}}}}],
    })
    requests = {"ablation": ("c1", "ablations", {"samples": 4}), "report": ("c1", "report", {})}
    step = jobpage.run_or_poll(api, requests, None)
    assert step["poll_disabled"] is False and step["results"] is None and step["error"] is None
    assert api.started == [("c1", "ablations", {"samples": 4}), ("c1", "report", {})]
    step = jobpage.run_or_poll(api, None, step["jobs"])  # running
    assert step["poll_disabled"] is False
    assert step["progress"].children[0].style["width"] == "75.0%"  # mean of 0.5 and done
    step = jobpage.run_or_poll(api, None, step["jobs"])
    assert step["poll_disabled"] is True
    assert step["results"] == {"ablation": [{"metric": 1}], "report": {"reliance": {}}}
    assert "result" not in step["jobs"]["ablation"]  # the page keeps slim jobs only


def test_a_failed_job_is_reported_and_polling_stops(fake_api):
    api = fake_api(jobs={"patching-c1": [{"status": "failed", "progress": 0.3, "error": "out of memory"}]})
    step = jobpage.run_or_poll(api, {"p": ("c1", "patching", {})}, None)
    assert step["poll_disabled"] is True and step["results"] is None
    assert step["error"] == "the patching job failed: out of memory"


def test_a_refused_start_is_reported(fake_api):
    api = fake_api(fail={"start_job": "task parameter 'max_length'=99999 is larger than this server allows (HTTP 422)"})
    step = jobpage.run_or_poll(api, {"p": ("c1", "patching", {})}, None)
    assert "larger than this server allows" in step["error"] and step["poll_disabled"] is True


def test_checkpoint_boot_reports_unknown_ids(fake_api):
    api = fake_api(checkpoints=[{"id": "a1", "name": "ntm", "arch": "ntm", "task": {"name": "copy"}}])
    options, error = common.checkpoint_boot(api, {"checkpoint": "a1"})
    assert options == [{"label": "ntm (ntm, copy)", "value": "a1"}] and error is None
    _, error = common.checkpoint_boot(api, {"checkpoint": "zz"})
    assert "no checkpoint with id zz" in error.children[1].children
    _, error = common.checkpoint_boot(api, {"checkpoint": "a1,zz"}, multi=True)
    assert "zz" in error.children[1].children
    options, error = common.checkpoint_boot(fake_api(fail={"checkpoints": "cannot reach the mnemoscope API"}), {})
    assert options == [] and "cannot reach" in error.children[1].children
