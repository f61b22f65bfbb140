"""The demo's verdicts come from the zoo's index, only when the index is this analysis
engine's and its entry is for the same bytes; otherwise a report job computes them."""
from __future__ import annotations

import copy

from fastapi.testclient import TestClient

from mnemoscope.analysis import ANALYSIS_VERSION
from mnemoscope.cli.commands import demo
from mnemoscope.models.zoo import load_index
from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings
from mnemoscope.server.store import Store


def test_verdicts_come_from_a_current_index_on_the_same_bytes(tmp_path):
    index = load_index()
    assert index["analysis_version"] == ANALYSIS_VERSION  # the committed index is current
    store = Store(tmp_path)
    try:
        records, _ = demo.register_zoo(store)
        stale = {**copy.deepcopy(index), "analysis_version": ANALYSIS_VERSION - 1}
        assert demo.verdicts_from_index(store, records, stale) == 0
        other = copy.deepcopy(index)
        other["checkpoints"][0]["sha256"] = "0" * 64  # an entry computed on other bytes
        assert demo.verdicts_from_index(store, records, other) == len(records) - 1
        assert store.get_checkpoint(records[0]["id"])["verdict"] is None
        assert demo.verdicts_from_index(store, records, index) == 1  # the rest already have theirs
        for record, entry in zip(records, index["checkpoints"]):
            got = store.get_checkpoint(record["id"])
            assert (got["verdict"], got["reliance_score"]) == (entry["reliance"]["verdict"], entry["reliance"]["score"])
    finally:
        store.close()


def test_only_checkpoints_without_a_verdict_get_a_report_job(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", workers=1, dashboard=False, auto_analyze=False, worker_nice=0)
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1"):
        records, _ = demo.register_zoo(app.state.store)
        stale = {**load_index(), "analysis_version": ANALYSIS_VERSION - 1}
        assert demo.verdicts_from_index(app.state.store, records[1:], load_index()) == len(records) - 1
        assert demo.verdicts_from_index(app.state.store, records, stale) == 0
        assert demo.queue_reports(app, records) == 1  # the first, whose verdict the index did not give
