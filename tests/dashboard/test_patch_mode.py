"""Patch page: the mode goes into the request (exact stays the server's default) and the
result says whether it is estimated or exact, with its verification."""
from __future__ import annotations

from mnemoscope.dashboard.pages import jobpage, patch

from .test_pages import PATCHING, done


def run(api, mode):
    return jobpage.run_step(patch.PAGE, api, "patch-run", "c1", [["memory.read"], "denoise", mode, 8, 3], None)


def test_attribution_mode_is_requested_and_labelled(fake_api):
    estimated = {**PATCHING, "label": "estimated", "method": "AtP*",
                 "verify": {"spearman": 0.93, "top10_recall": 0.8, "cells": 60}}
    api = fake_api(jobs={"patching-c1": done("patching", estimated)})
    out = run(api, "attribution+verify")
    assert api.started[0][2]["mode"] == "attribution+verify"
    summary = str(out["summary"].to_plotly_json())
    assert "estimated (AtP*)" in summary and "checked exactly on 60 cells: Spearman 0.930, top-10 recall 0.80" in summary
    assert out["heatmap"]["data"][-1]["colorbar"]["title"]["text"] == "recovery (estimated)"


def test_exact_mode_sends_no_mode_and_says_exact(fake_api):
    api = fake_api(jobs={"patching-c1": done("patching", {**PATCHING, "label": "exact"})})
    out = run(api, "exact")
    assert "mode" not in api.started[0][2]
    summary = str(out["summary"].to_plotly_json())
    assert "exact · denoise" in summary and "checked exactly" not in summary
    assert out["heatmap"]["data"][-1]["colorbar"]["title"]["text"] == "recovery"
