"""Callback logic of Checkpoints, Ablate, Patch, Gradients and Compare, with a fake API."""
from __future__ import annotations

import pytest
from dash import no_update

from mnemoscope.dashboard.context import Context
from mnemoscope.dashboard.pages import ablate, checkpoints, compare, gradients, jobpage, patch

from .conftest import KINDS

CTX = Context()
CKPTS = [
    {"id": "c1", "name": "ntm-early", "arch": "ntm", "task": {"name": "copy"}, "parameters": 1234, "size_bytes": 2048,
     "step": 100, "verdict": None, "reliance_score": None},
    {"id": "c2", "name": "ntm-late", "arch": "ntm", "task": {"name": "copy"}, "parameters": 1234, "size_bytes": 2048,
     "step": 900, "verdict": "functional", "reliance_score": 0.93},
]
SITES = [{"name": "memory.read", "kind": "read"}, {"name": "memory.read_weights", "kind": "read_weights"},
         {"name": "controller.output", "kind": "bypass"}, {"name": "output", "kind": "output"}]
T = 4

ABLATION = {
    "spec": {"sites": ["memory.read"], "mode": "resample", "steps": [2, 3]}, "label": "resample memory.read",
    "metric_name": "wrong_bits", "higher_is_better": False, "metric": 3.0, "metric_clean": 1.0, "metric_delta": 2.0,
    "loss": 2.0, "loss_clean": 0.5, "loss_delta": 1.5,
    "metric_per_step": [0.0, 0.0, 1.5, 1.5], "metric_clean_per_step": [0.0, 0.0, 0.5, 0.5],
    "prob_change": 0.2, "kl": 0.3, "flip_rate": 0.25,
    "prob_change_per_step": [0.0, 0.0, 0.4, 0.4], "kl_per_step": [0, 0, 0.6, 0.6], "flip_rate_per_step": [0, 0, 0.5, 0.5],
}
RELIANCE = {"score": 0.91, "ci95": [0.85, 0.97], "verdict": "functional", "evidence": ["reads matter", "verdict: functional"],
            "metric_clean": 1.0, "metric_ablated": 3.0, "chance": 4.0, "prob_change": 0.2}
PATCHING = {"sites": ["memory.read", "controller.output"], "steps": T, "direction": "denoise", "per_element": None,
            "scores": [[0.0, 0.1, 0.9, None], [0.0, 0.0, 0.05, 0.02]], "patched": [[1, 1.1, 1.9, None], [1, 1, 1.05, 1.02]],
            "score_clean": 2.0, "score_corrupted": 1.0, "pairs": 8, "positions": 10, "score_name": "answer_logit_diff",
            "differs_per_step": [0, 0, 3, 5], "note": ""}
GRADS = {"loss": 1.0, "groups": [{"name": "memory", "grad_norm": 0.5, "parameters": 10, "grad_rms": 0.1},
                                 {"name": "controller", "grad_norm": 2.0, "parameters": 20, "grad_rms": 0.2}],
         "memory_per_step": [0.1, 0.2, 0.3, 0.4], "bypass_per_step": [1, 1, 1, 1], "ratio": 0.25,
         "memory_total": 0.5, "bypass_total": 2.0}


def report(score, verdict, ratio):
    return {"reliance": {**RELIANCE, "score": score, "verdict": verdict, "ci95": [score - 0.1, score + 0.05]},
            "metric": {"name": "wrong_bits", "clean": 1.0, "chance": 4.0},
            "entropy": {"sites": [{"name": "memory.read_weights", "kind": "read_weights", "mean": 0.3, "label": "focused"}]},
            "utilization": {"slots": [{"name": "memory.read_weights", "kind": "read_weights", "slots": 6,
                                       "effective_slots": 3.5}], "states": []},
            "gradients": {"ratio": ratio}}


def done(kind, data):
    return [{"status": "done", "progress": 1.0, "result": {"kind": kind, "data": data}}]


def step(page, api, trigger, checkpoint, *form, state=None):
    """One run-and-poll callback of a job page: trigger "run" or "poll"."""
    return jobpage.run_step(page.PAGE, api, f"{page.PATH}-{trigger}", checkpoint, form, state)


def run_to_end(page, api, checkpoint, *form):
    """Run, then poll until polling stops; the last step."""
    out = step(page, api, "run", checkpoint, *form)
    while out["poll_disabled"] is False:
        out = step(page, api, "poll", checkpoint, *form, state=out["jobs"])
    return out


# -- checkpoints ---------------------------------------------------------------------------------

def test_table_lists_checkpoints_with_badges_and_links(fake_api):
    out = checkpoints.table_step(fake_api(checkpoints=CKPTS), CTX, None, {})
    table = out["table"]
    rows = table.children[1].children
    assert [r.to_plotly_json()["props"]["data-checkpoint"] for r in rows] == ["c1", "c2"]
    text = str(table.to_plotly_json())
    assert "ms-badge-functional" in text and "not analysed" in text
    assert "/dashboard/explore?checkpoint=c1" in text and "/dashboard/ablate?checkpoint=c2" in text
    assert out["poll_disabled"] is True and out["export"]["csv"].startswith("id,name,file_name,arch")


def test_delete_and_analyze(fake_api):
    api = fake_api(checkpoints=CKPTS, jobs={"report-c1": [{"status": "running", "progress": 0.2},
                                                          {"status": "running", "progress": 0.6}]})
    out = checkpoints.table_step(api, CTX, {"type": "ckpt-delete", "id": "c2"}, {})
    assert ("delete_checkpoint", "c2") in api.calls
    assert len(out["table"].children[1].children) == 1
    out = checkpoints.table_step(api, CTX, {"type": "ckpt-analyze", "id": "c1"}, {})
    assert api.started[-1] == ("c1", "report", {}) and out["poll_disabled"] is False
    assert "analysing" in str(out["table"].to_plotly_json())
    assert set(out["jobs"]["c1"]) >= {"id", "status", "progress"} and "result" not in out["jobs"]["c1"]


def test_empty_store_says_what_to_do(fake_api):
    out = checkpoints.table_step(fake_api(), CTX, None, {})
    assert "No checkpoints yet" in out["table"].children


def test_api_down_keeps_the_table_and_says_why(fake_api):
    out = checkpoints.table_step(fake_api(fail={"checkpoints": "cannot reach the mnemoscope API"}), CTX, None, {})
    assert out["table"] is no_update and "cannot reach" in out["error"]


def test_upload_messages():
    ok = checkpoints.upload_message({"phase": "done", "status": 201, "name": "a.safetensors",
                                     "checkpoint": {"id": "c9", "name": "a", "arch": "dnc", "task": {"name": "copy"},
                                                    "parameters": 99}}, CTX)
    text = str(ok.to_plotly_json())
    assert "Uploaded: a (dnc, copy, 99 parameters)" in text and "/dashboard/explore?checkpoint=c9" in text
    again = checkpoints.upload_message({"phase": "done", "status": 200, "checkpoint": {"id": "c9"}}, CTX)
    assert "Already stored" in str(again.to_plotly_json())
    bad = checkpoints.upload_message({"phase": "error", "name": "x.pt", "error": "refused to unpickle (HTTP 422)"}, CTX)
    assert bad.role == "alert" and "x.pt: refused to unpickle" in str(bad.to_plotly_json())
    assert checkpoints.upload_message({"phase": "uploading"}, CTX) is None


# -- ablate ------------------------------------------------------------------------------------

def test_ablation_body_and_its_complaints():
    body = ablate.ablation_body(KINDS, ["memory.read"], "resample", "2-3", "16", 1)
    assert body == {"samples": 16, "seed": 1, "specs": [{"sites": ["memory.read"], "mode": "resample", "steps": [2, 3]}]}
    blank = ablate.ablation_body(KINDS, ["m"], "zero", "all", None, None)
    assert blank["specs"][0]["steps"] is None and (blank["samples"], blank["seed"]) == (32, 0)  # the server's defaults
    with pytest.raises(ValueError, match="at least one site"):
        ablate.ablation_body(KINDS, [], "zero", "all", 8, 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        ablate.ablation_body(KINDS, ["m"], "explode", "all", 8, 0)
    with pytest.raises(ValueError, match="at least 2"):  # the page's floor: mean and resample need other sequences
        ablate.ablation_body(KINDS, ["m"], "zero", "all", 1, 0)
    with pytest.raises(ValueError, match="sequences must be at most 512"):
        ablate.ablation_body(KINDS, ["m"], "zero", "all", 513, 0)


def test_limits_come_from_the_server(fake_api):
    kinds = [dict(k, limits={**k["limits"], "samples": {"minimum": 1, "maximum": 64, "default": 10}})
             if k["name"] == "ablations" else k for k in KINDS]
    assert ablate.ablation_body(kinds, ["m"], "zero", "all", None, None)["samples"] == 10
    with pytest.raises(ValueError, match="sequences must be at most 64"):
        ablate.ablation_body(kinds, ["m"], "zero", "all", 100, 0)
    # the boot callback bounds the inputs and fills in defaults, keeping what the URL gave
    options, error, *bounds, _autorun = jobpage.boot_step(ablate.PAGE, fake_api(kinds=kinds), {}, ["12", None])
    assert error is None and bounds == [2, 64, "12", 0, 2**31 - 1, 0]
    _, error, *bounds, _autorun = jobpage.boot_step(patch.PAGE, fake_api(), {}, [None, None])
    assert bounds == [1, 256, 8, 0, 2**31 - 1, 0]


def test_unreachable_limits_are_a_sentence(fake_api):
    api = fake_api(fail={"kinds": "cannot reach the mnemoscope API at http://127.0.0.1:9"})
    _, error, *bounds, _autorun = jobpage.boot_step(gradients.PAGE, api, {}, ["4", None])
    assert "cannot reach" in str(error.to_plotly_json()) and bounds == [None, None, "4", None, None, None]
    out = step(gradients, api, "run", ["c1"], 4, 0)
    assert "cannot reach" in out["error"] and not api.started


def test_ablate_runs_two_jobs_and_shows_the_verdict(fake_api):
    api = fake_api(jobs={"ablations-c1": [{"status": "running", "progress": 0.1}, {"status": "running", "progress": 0.5}]
                         + done("ablations", [ABLATION]), "report-c1": done("report", {"reliance": RELIANCE})})
    out = step(ablate, api, "run", "c1", ["memory.read"], "resample", "2-3", None, 32, 0)
    assert {k for _, k, _ in api.started} == {"ablations", "report"} and out["poll_disabled"] is False
    while out["poll_disabled"] is False:
        out = step(ablate, api, "poll", "c1", ["memory.read"], "resample", "2-3", None, 32, 0, state=out["jobs"])
    assert out["error"] is None
    verdict = out["verdict"].to_plotly_json()
    assert verdict["props"]["data-verdict"] == "functional" and "0.91" in str(verdict) and "[0.85, 0.97]" in str(verdict)
    metric = out["metric"]
    assert [d["name"] for d in metric["data"]] == ["clean", "ablated"]
    assert [(s["x0"], s["x1"]) for s in metric["layout"]["shapes"]] == [(1.5, 3.5)]  # the ablated steps
    assert out["change"]["data"][0]["y"] == [0.0, 0.0, 0.4, 0.4]
    assert "1.0000 → 3.0000 (+2.0000)" in str(out["summary"].to_plotly_json())
    assert out["export"]["csv"].splitlines()[0] == "t,metric_clean,metric_ablated,prob_change,flip_rate,kl,scored_positions"


def test_ablate_form_errors_are_messages(fake_api):
    api = fake_api()
    out = step(ablate, api, "run", None, ["memory.read"], "zero", "all", None, 8, 0)
    assert out["error"] == "choose a checkpoint first" and not api.calls
    out = step(ablate, api, "run", "c1", ["memory.read"], "zero", "5-2", None, 8, 0)
    assert "backwards" in out["error"] and not api.started


def test_sites_default_to_memory_reads(fake_api):
    api = fake_api(sites={"c1": SITES})
    options, value, error = jobpage.load_sites(api, "c1", [], default_kinds=("read",))
    assert [o["value"] for o in options] == ["memory.read", "memory.read_weights", "controller.output"]
    assert value == ["memory.read"] and error is None
    assert jobpage.load_sites(api, "c1", ["controller.output", "gone"], ("read",))[1] == ["controller.output"]
    assert jobpage.load_sites(api, "c1", [])[1] == []  # Patch: none chosen means every memory site


# -- patch ---------------------------------------------------------------------------------------

def test_patch_heatmap_marks_differing_steps_and_hovers_exact_values():
    fig = patch.heatmap_figure(PATCHING)
    bar, heat = fig["data"]
    assert heat["y"] == PATCHING["sites"] and heat["z"] == PATCHING["scores"]
    assert "%{z:.4f}" in heat["hovertemplate"] and "patched score" in heat["hovertemplate"]
    assert heat["zmin"] == -heat["zmax"] <= -1  # centred on 0, at least -1..1
    assert [s["x0"] + 0.5 for s in fig["layout"]["shapes"]] == [2, 3]
    assert bar["y"] == [0, 0, 3, 5]


def test_patch_elements_are_averaged_for_the_site_map():
    p = dict(PATCHING, per_element="slot", scores=[[[0.0, 1.0], [None, None], [0.5, 0.5], [1, 1]]] * 2,
             patched=[[[1, 2], [None, None], [1, 1], [2, 2]]] * 2)
    heat = patch.heatmap_figure(p)["data"][-1]
    assert heat["z"][0] == [0.5, None, 0.5, 1.0]


def test_patch_run_to_heatmap_and_summary(fake_api):
    api = fake_api(jobs={"patching-c1": done("patching", PATCHING)})
    out = step(patch, api, "run", "c1", ["memory.read", "controller.output"], "denoise", "exact", 8, 3)
    assert api.started == [("c1", "patching", {"pairs": 8, "seed": 3, "direction": "denoise",
                                               "sites": ["memory.read", "controller.output"]})]
    assert out["heatmap"]["data"][-1]["type"] == "heatmap" and out["error"] is None
    summary = str(out["summary"].to_plotly_json())
    assert "0.900" in summary and "answer_logit_diff" in summary
    assert out["export"]["csv"].splitlines()[1] == "memory.read,0,0.0,1"


def test_patch_without_differences_says_so():
    fig = patch.heatmap_figure({"sites": [], "scores": [], "note": "no pair differs"})
    assert fig["layout"]["annotations"][0]["text"] == "no pair differs"


# -- gradients -----------------------------------------------------------------------------------

def test_gradients_for_a_series_in_training_order(fake_api):
    late = dict(GRADS, ratio=0.8, memory_total=1.6)
    api = fake_api(checkpoints=CKPTS, jobs={"gradients-c1": done("gradients", GRADS), "gradients-c2": done("gradients", late)})
    out = run_to_end(gradients, api, ["c2", "c1"], 16, 0)
    assert {c for c, _, _ in api.started} == {"c1", "c2"} and out["error"] is None
    series = out["series"]["data"][0]
    assert series["x"] == [100, 900] and series["y"] == [0.25, 0.8]  # by step, not by selection order
    assert out["series_hidden"] is False
    assert [d["name"] for d in out["steps"]["data"]] == ["memory reads", "bypass"]
    assert out["groups"]["data"][0]["x"] == ["memory", "controller"]
    assert "grad_norm memory" in out["export"]["csv"].splitlines()[0]


def test_a_batch_of_jobs_is_polled_with_one_request(fake_api):
    running = [{"status": "running", "progress": 0.2}, {"status": "running", "progress": 0.2},
               {"status": "running", "progress": 0.6}]
    api = fake_api(checkpoints=CKPTS, jobs={"gradients-c1": running + done("gradients", GRADS),
                                            "gradients-c2": running + done("gradients", GRADS)})
    out = step(gradients, api, "run", ["c1", "c2"], 16, 0)
    for _ in range(2):
        api.calls.clear()
        out = step(gradients, api, "poll", ["c1", "c2"], 16, 0, state=out["jobs"])
        assert api.calls == [("jobs", {"kind": "gradients"})] and out["poll_disabled"] is False
    api.calls.clear()
    out = step(gradients, api, "poll", ["c1", "c2"], 16, 0, state=out["jobs"])
    # the poll that sees both done, then each result once
    assert [c[0] for c in api.calls][:3] == ["jobs", "job", "job"] and out["poll_disabled"] is True
    assert out["error"] is None and out["series"]["data"][0]["y"] == [0.25, 0.25]
    # one checkpoint, several kinds (Ablate): the list is that checkpoint's
    assert jobpage.batch_filter([{"checkpoint_id": "c1", "kind": "ablations"},
                                 {"checkpoint_id": "c1", "kind": "report"}]) == {"checkpoint_id": "c1"}


def test_a_job_the_list_leaves_out_is_asked_for_alone(fake_api):
    api = fake_api(jobs={"patching-c1": [{"status": "running", "progress": 0.5}]})
    jobs = {"p": {"id": "patching-c1", "kind": "patching", "checkpoint_id": "c1", "status": "running"}}
    polled, error = jobpage.poll_jobs(api, jobs)  # nothing started through this fake: the list is empty
    assert error is None and polled["p"]["progress"] == 0.5
    assert [c[0] for c in api.calls] == ["jobs", "job"]


def test_gradients_need_a_checkpoint(fake_api):
    out = step(gradients, fake_api(), "run", [], 16, 0)
    assert "choose one checkpoint" in out["error"]
    out = step(gradients, fake_api(), "run", [f"c{i}" for i in range(30)], 16, 0)
    assert out["error"] == "at most 24 checkpoints at once"


# -- compare ---------------------------------------------------------------------------------------

def test_compare_side_by_side(fake_api):
    api = fake_api(checkpoints=CKPTS, jobs={"report-c1": done("report", report(0.1, "decorative", 0.05)),
                                            "report-c2": done("report", report(0.9, "functional", 0.7))})
    out = run_to_end(compare, api, ["c1", "c2"], 32, 0)
    assert out["error"] is None
    table = str(out["table"].to_plotly_json())
    assert "ms-badge-decorative" in table and "ms-badge-functional" in table
    assert "0.90 [0.80, 0.95]" in table and "3.5 of 6" in table
    bars = out["figure"]["data"]
    assert bars[0]["y"] == [0.1, 0.9] and bars[3]["y"] == [0.05, 0.7]
    assert bars[0]["error_y"]["array"] == [pytest.approx(0.05), pytest.approx(0.05)]
    rows = out["export"]["csv"].splitlines()
    assert rows[0].startswith("checkpoint_id,name,file_name,step,verdict,score") and len(rows) == 3


def test_summarise_tolerates_missing_sections():
    s = compare.summarise({"reliance": {"verdict": "partial"}})
    assert s["verdict"] == "partial" and s["score"] is None and s["effective_slots"] is None


def test_compare_shows_necessity_sufficiency_and_the_bypass_from_the_engine():
    report = {"reliance": {"verdict": "functional", "score": 0.77, "ci95": [0.67, 0.88],
                           "sufficiency": {"value": 1.0, "ci95": [0.99, 1.0], "mode": "mean"},
                           "components": {"bypass": {"necessity": {"value": 0.0, "ci95": [0.0, 0.01], "mode": "mean"}},
                                          "memory": None}},
              "gradients": {"attribution_share": 0.66, "ratio": 0.61}}
    s = compare.summarise(report)
    assert compare.estimate_text(s["sufficiency"]) == "1.00 [0.99, 1.00]"
    assert compare.estimate_text(s["bypass_necessity"]) == "0.00 [0.00, 0.01]"
    assert compare.estimate_text(compare.summarise({"reliance": {"components": {"bypass": None}}})["bypass_necessity"]) == "-"
    text = str(compare.comparison_table([({"id": "a", "name": "a"}, s)]).to_plotly_json())
    assert "memory sufficiency (95% CI)" in text and "1.00 [0.99, 1.00]" in text and "0.66" in text


def test_ablate_shows_the_factorial_design_with_intervals_and_warnings():
    est = lambda v, lo, hi: {"value": v, "ci95": [lo, hi], "mode": "mean"}  # noqa: E731
    reliance = {"verdict": "redundant", "score": 0.1, "ci95": [0.0, 0.16], "stability": 0.97,
                "components": {"memory": {"necessity": est(0.1, 0.0, 0.16), "sufficiency": est(0.98, 0.97, 1.0)},
                               "bypass": {"necessity": est(0.05, 0.0, 0.1), "sufficiency": est(0.9, 0.84, 0.95)},
                               "state": None},
                "joint_necessity": est(0.9, 0.88, 0.93), "per_position": est(0.2, 0.1, 0.3),
                "warnings": [{"code": "sparse_use", "message": "20% of scored positions need memory"}],
                "evidence": ["a line"]}
    text = str(ablate.verdict_panel(reliance).to_plotly_json())
    for shown in ("0.98 [0.97, 1.00]", "0.90 [0.84, 0.95]", "0.90 [0.88, 0.93]", "97%",
                  "20% of scored positions need memory"):
        assert shown in text, shown
    assert ablate.design_table({"verdict": "partial"}) is None  # an older report without the design
