"""What a researcher's first session ran into (issue 17), callback by callback with a fake
API: each test fails on the dashboard before the fix."""
from __future__ import annotations

import math

import pytest
from dash import dcc

from mnemoscope.dashboard import explore_data as data
from mnemoscope.dashboard import explore_figures as figures
from mnemoscope.dashboard.components import fmt, log_ticks, warnings_row
from mnemoscope.dashboard.context import Context
from mnemoscope.dashboard.pages import ablate, checkpoints, compare, explore, gradients, jobpage, patch
from mnemoscope.dashboard.pages.common import checkpoint_label

from .test_explore import fake_trace
from .test_pages import ABLATION, CKPTS, GRADS, PATCHING, RELIANCE, done, report, run_to_end, step

CTX = Context()


def walk(component):
    """Every component in a Dash tree."""
    yield component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if hasattr(child, "to_plotly_json"):
            yield from walk(child)


def text(component) -> str:
    return str(component.to_plotly_json())


# -- 1. Gradients with many fresh jobs -----------------------------------------------------------

SERIES = [{"id": f"s{i:02d}", "name": f"ntm-copy-step-{300 * (i + 1):06d}", "arch": "ntm", "task": {"name": "copy"},
           "step": 300 * (i + 1), "file_name": f"ntm-copy-step-{300 * (i + 1):06d}.safetensors"} for i in range(12)]


def grads(i):
    return {**GRADS, "ratio": 0.05 * (i + 1), "memory_total": 0.1 * (i + 1), "bypass_total": 2.0}


def test_twelve_fresh_jobs_are_polled_as_one_batch_and_all_reach_the_page(fake_api):
    queued, running = {"status": "queued", "progress": 0.0}, {"status": "running", "progress": 0.5}
    api = fake_api(checkpoints=SERIES, jobs={f"gradients-{c['id']}": [queued, running, running]
                                             + done("gradients", grads(i)) for i, c in enumerate(SERIES)})
    ids = [c["id"] for c in SERIES]
    out = step(gradients, api, "run", ids, 4, 0)
    assert len(api.started) == 12 and out["poll_disabled"] is False
    polls = 0
    while out["poll_disabled"] is False:
        before = len(api.calls)
        out = step(gradients, api, "poll", ids, 4, 0, state=out["jobs"])
        asked = [c[0] for c in api.calls[before:]]
        polls += 1
        if out["poll_disabled"] is False:  # a poll that is not the last: one request for all twelve
            assert asked == ["jobs"], asked
    assert polls <= 4 and out["error"] is None
    assert len(out["groups"]["data"]) == 12  # every checkpoint, the final one included


def test_job_pages_poll_after_each_answer_not_on_a_timer():
    """A free-running dcc.Interval let slow polls overtake each other: Dash drops an answer
    that a newer call overtook, so the page never heard the jobs end (issue 17, point 1)."""
    for page in (gradients, compare, ablate, patch):
        layout = page.layout({}, CTX)
        assert not [c for c in walk(layout) if isinstance(c, dcc.Interval)], page.PATH
        assert any(getattr(c, "id", None) == f"{page.PATH}-wait" for c in walk(layout))
    assert jobpage.next_wait(True, "gradients-poll") is None
    first, second = jobpage.next_wait(False, "gradients-poll"), jobpage.next_wait(False, "gradients-poll")
    assert first["key"] != second["key"] and first["ms"] == jobpage.POLL_MS and first["target"] == "gradients-poll"


# -- 2. Gradients shows every checkpoint -------------------------------------------------------------

def test_gradients_draw_and_list_every_checkpoint(fake_api):
    api = fake_api(checkpoints=SERIES, jobs={f"gradients-{c['id']}": done("gradients", grads(i))
                                             for i, c in enumerate(SERIES)})
    out = run_to_end(gradients, api, [c["id"] for c in SERIES][::-1], 4, 0)
    bars = out["groups"]["data"]
    assert [b["name"] for b in bars] == [f"step {300 * (i + 1)}" for i in range(12)]  # training order, all 12
    layout = out["groups"]["layout"]
    assert layout["legend"]["y"] < 0 and layout["legend"]["yanchor"] == "top"  # under the plot, not over the bars
    rows = out["summary"].children[1].children
    assert len(rows) == 12 and "ntm-copy-step-003600" in text(rows[-1])
    right = out["series"]["layout"]["yaxis2"]
    assert right["ticktext"] and all(float(t) == float(f"{float(t):.1g}") for t in right["ticktext"])


def test_log_ticks_are_round_numbers():
    ticks = log_ticks([0.159, 0.294, 0.487])  # plotly's own: 0.159, 0.294, 0.487
    assert ticks["ticktext"] == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    assert log_ticks([1e-4, 3.0])["ticktext"] == ["1e-05", "0.0001", "0.001", "0.01", "0.1", "1", "10"]
    assert log_ticks([None, 0, -1]) == {}


# -- 3. Compare ------------------------------------------------------------------------------------

def hybrid_report():
    r = report(0.0, "decorative", 0.2)
    r["reliance"]["ci95"] = [-0.0, 0.0]
    r["reliance"]["score"] = -0.0
    r["entropy"]["sites"] = [{"name": "layers.2.attention.pattern", "kind": "attention", "mean": 0.93,
                              "label": "diffuse"}]
    r["utilization"] = {"slots": [], "states": [{"name": "layers.0.memory.state", "max_rank": 4,
                                                 "mean_effective_rank": 2.8}]}
    return r


def collapsed_ntm_report():
    r = report(0.1, "decorative", 0.05)
    r["entropy"]["sites"][0].update(mean=1.0, label="diffuse")
    r["utilization"]["slots"][0].update(slots=16, effective_slots=16.0)
    r["reliance"]["warnings"] = ["memory collapsed: every slot holds the same row, so even reads pick nothing out"]
    return r


def test_compare_keeps_the_chosen_order_and_says_what_each_number_is(fake_api):
    api = fake_api(checkpoints=CKPTS, jobs={"report-c1": done("report", collapsed_ntm_report()),
                                            "report-c2": done("report", hybrid_report())})
    out = run_to_end(compare, api, ["c2", "c1"], 32, 0)  # chosen: the later step first
    head = out["table"].children[0].children.children
    assert "ntm-late" in text(head[1]) and "ntm-early" in text(head[2])
    table = text(out["table"])
    assert "-0.00" not in table and "0.00 [0.00, 0.00]" in table
    assert "attention layers.2.attention.pattern" in table  # the hybrid's entropy is its attention's
    assert "state rank 2.8 of 4" in table
    assert "weight spread evenly, no slot picked out" in table and "nothing picked out" in table
    assert "memory collapsed" in table  # the verdict's warnings under the verdict
    slots_bars = out["figure"]["data"][2]
    assert slots_bars["y"] == [2.8, 16.0]  # the hybrid's state rank is drawn, not left empty


def test_negative_zero_is_never_shown():
    assert fmt(-0.0, 2) == "0.00" and fmt(-0.004, 2) == "-4.00e-03" and fmt(-0.5, 2) == "-0.50"


def test_warnings_row_renders_sentences_or_nothing():
    assert warnings_row({"reliance": {"verdict": "partial"}}) is None
    assert warnings_row(None) is None
    row = warnings_row({"reliance": {"warnings": ["memory collapsed", {"text": "at chance"}]}})
    assert [li.children for li in row.children] == ["memory collapsed", "at chance"]


# -- 4. Ablate -------------------------------------------------------------------------------------

MQAR_ABLATION = {
    **ABLATION, "metric_name": "accuracy", "higher_is_better": True, "spec": {"sites": ["m"], "mode": "resample",
                                                                             "steps": None},
    "metric_per_step": [0.0, 0.0, 0.02, 0.03], "metric_clean_per_step": [0.0, 0.0, 0.08, 0.07],
    "scored_per_step": [0, 0, 16, 16], "metric_scored_per_step": [None, None, 0.2, 0.25],
    "metric_clean_scored_per_step": [None, None, 0.62, 0.6], "prob_change_scored_per_step": [None, None, 0.5, 0.4],
    "kl_scored_per_step": [None, None, 1.0, 0.8], "flip_rate_scored_per_step": [None, None, 0.6, 0.5],
    "flip_rate_per_step": [0.4, 0.4, 0.6, 0.5],
}


def test_ablate_plots_scored_positions_greys_the_rest_and_shades_all(fake_api):
    api = fake_api(jobs={"ablations-c1": done("ablations", [MQAR_ABLATION]), "report-c1": done("report", {"reliance": RELIANCE})})
    out = run_to_end(ablate, api, "c1", ["m"], "resample", "all", None, 16, 0)
    metric = out["metric"]
    assert metric["data"][0]["y"] == [None, None, 0.62, 0.6]  # on accuracy's scale, unscored steps left out
    assert "over scored positions" in metric["layout"]["yaxis"]["title"]["text"]
    shapes = {(s["name"], s["x0"], s["x1"]) for s in metric["layout"]["shapes"]}
    assert ("ablated", -0.5, 3.5) in shapes  # "all" is shaded too
    assert ("unscored", -0.5, 1.5) in shapes
    change = out["change"]
    assert change["data"][1]["y"] == [None, None, 0.6, 0.5]  # no 40% "flipped" at unscored steps
    assert "unscored" in {s["name"] for s in change["layout"]["shapes"]}


def test_a_failed_job_does_not_leave_running_for_ever(fake_api):
    api = fake_api(jobs={"ablations-c1": [{"status": "running", "progress": 0.2},
                                          {"status": "failed", "error": "out of memory"}],
                         "report-c1": done("report", {"reliance": RELIANCE})})
    out = run_to_end(ablate, api, "c1", ["m"], "zero", "all", None, 16, 0)
    assert "out of memory" in out["error"]
    for key in ("metric", "change"):
        assert "the job failed" in out[key]["layout"]["annotations"][0]["text"]


def test_timesteps_box_is_wide_enough_and_shared_urls_run_again(fake_api):
    layout = ablate.layout({"steps": "99-120"}, CTX)
    box = next(c for c in walk(layout) if getattr(c, "id", None) == "ablate-steps")
    assert "ms-input-steps" in box.className
    *_, autorun = jobpage.boot_step(ablate.PAGE, fake_api(), {"checkpoint": "c1", "run": "1"}, [None, None])
    assert autorun == 1
    out = jobpage.run_step(ablate.PAGE, fake_api(), "ablate-autorun", "c1", ["m", "zero", "all", None, 16, 0], None)
    assert out["error"] is None and out["ran"] == "1"


# -- 5. Patch in noise mode ----------------------------------------------------------------------------

def test_noise_summary_asks_for_the_largest_drop():
    noise = {**PATCHING, "direction": "noise",
             "scores": [[1.0, 0.98, 0.2, 1.0], [1.0, 1.0, 1.0, 1.0]], "sites": ["memory.read", "controller.output"]}
    table = text(patch.summary_view(noise))
    assert "largest drop" in table and "max recovery" not in table
    assert "0.800" in table  # 1 - 0.2 at t 2
    assert "none: no patch moves the answer" in table  # the untouched site, not "0.000 at t 0"
    zero = {**PATCHING, "scores": [[0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]]}
    denoise = text(patch.summary_view(zero))
    assert "max recovery" in denoise and "none: no patch moves the answer" in denoise


# -- 6. Every layer of a stack ---------------------------------------------------------------------

HYBRID = [
    {"name": "layers.0.memory.read", "kind": "read", "shape": [8, 4], "axes": ["head", "value"], "on_request": False,
     "distribution": False},
    {"name": "layers.0.memory.state", "kind": "state", "shape": [8, 4, 4], "axes": ["head", "key", "value"],
     "on_request": True, "distribution": False},
    {"name": "layers.0.memory.attention", "kind": "attention", "shape": [8, None], "axes": ["head", "key"],
     "on_request": True, "distribution": False},
    {"name": "layers.1.mlp.out", "kind": "bypass", "shape": [32], "axes": ["feature"], "on_request": False,
     "distribution": False},
    {"name": "layers.2.attention.pattern", "kind": "attention", "shape": [8, None], "axes": ["head", "key"],
     "on_request": False, "distribution": True},
    {"name": "output", "kind": "output", "shape": [64], "axes": ["feature"], "on_request": False, "distribution": False},
]


def hybrid_trace(*_, sites=(), **__):
    T, H = 6, 8
    rows = [[[1.0 / (t + 1) if k <= t else None for k in range(T)] for _ in range(H)] for t in range(T)]
    trace = fake_trace(sites=())
    trace["sites"] = {name: {"kind": "attention", "distribution": name.endswith("pattern"),
                             "axes": ["batch", "time", "head", "key"], "data": [rows],
                             "entropy": {"axes": ["batch", "time", "head"], "data": [[[0.9] * H for _ in range(T)]]}
                             if name.endswith("pattern") else None}
                      for name in sites if "attention" in name}
    for key in ("inputs", "targets", "outputs"):
        trace[key]["data"] = [trace[key]["data"][0][:1] * T]
    trace["mask"]["data"] = [[t % 2 == 1 for t in range(T)]]
    trace["loss"]["data"] = [[0.0] * T]
    trace["metric"]["data"] = [[0.0] * T]
    trace["metric_scored"] = {"axes": ["batch", "time"], "data": [[None if t % 2 == 0 else 1.0 for t in range(T)]]}
    return trace


def test_stacked_models_pick_a_layer_and_a_head(fake_api):
    layers = data.layer_choices(HYBRID)
    assert [(e["layer"], e["label"], e["heads"]) for e in layers] == [(0, "layer 0 · memory", 8),
                                                                      (2, "layer 2 · attention", 8)]
    assert data.sites_to_record(HYBRID, 2) == ["layers.2.attention.pattern"]
    ckpt = {"id": "h", "name": "hybrid", "arch": "sequence", "task": {"name": "mqar", "params": {"seq_len": 6}}}
    api = fake_api(checkpoints=[ckpt], sites={"h": HYBRID}, trace=hybrid_trace)
    view = explore.load_view(api, "h", None, 0, None, "2", None)  # the attention layer, every head
    assert view["error"] is None and view["layer"] == "2" and view["head"] == "all" and view["show_layers"] is True
    assert [o["value"] for o in view["layer_options"]] == ["0", "2"]
    attention = view["attention"]
    assert len(attention["data"]) == 8  # all eight heads, none "not drawn"
    domains = {tuple(attention["layout"][f"xaxis{i + 1 if i else ''}"]["domain"]) for i in range(8)}
    assert len(domains) == 4  # small multiples, four a row
    assert "not drawn" not in view["status"] and "layer 2 · attention" in view["status"]
    one = explore.load_view(api, "h", None, 0, None, "2", "5")
    assert [s["label"] for s in one["bundle"]["attention"]] == ["layers.2.attention.pattern head 5"]
    assert [d["name"] for d in one["entropy"]["data"]] == ["layers.2.attention.pattern head 5"]
    default = explore.load_view(api, "h", None, 0, None, None, None)
    assert default["layer"] == "0" and default["bundle"]["matrix_site"] == "layers.0.memory.state"
    assert explore.choose_layer(layers, "7", "99") == (0, None)  # not in this model: its first layer, all heads


def test_ntm_has_no_layer_picker(fake_api):
    from .test_explore import NTM_SITES

    ckpt = {"id": "c1", "name": "tiny", "arch": "ntm", "task": {"name": "copy", "params": {}}}
    view = explore.load_view(fake_api(checkpoints=[ckpt], sites={"c1": NTM_SITES}, trace=fake_trace()), "c1", None, 0)
    assert view["show_layers"] is False and view["layer_options"] == []


# -- 7. Telling checkpoints apart; uploads analysed by themselves -----------------------------------------

RUN = [
    {"id": "f1", "name": "ntm-copy", "file_name": "final.safetensors", "arch": "ntm", "task": {"name": "copy"},
     "step": 1000, "metrics": {"loss": 0.2, "wrong_bits": 0.5, "train_loss": 0.1}, "report_job_id": "rep-f1",
     "verdict": "partial", "reliance_score": 0.4},
    {"id": "s1", "name": "ntm-copy", "file_name": "step-001000.safetensors", "arch": "ntm", "task": {"name": "copy"},
     "step": 1000, "metrics": {}, "report_job_id": None, "verdict": None, "reliance_score": None},
]


def test_file_names_tell_one_runs_checkpoints_apart():
    labels = [checkpoint_label(c) for c in RUN]
    assert labels[0] != labels[1]
    assert "final.safetensors" in labels[0] and "step-001000.safetensors" in labels[1]
    assert checkpoint_label({"name": "ntm-copy", "file_name": "ntm-copy.safetensors", "arch": "ntm"}) == \
        "ntm-copy (ntm, no task)"  # no noise where the file is named after the checkpoint


def test_checkpoints_show_metric_warnings_and_automatic_analyses(fake_api):
    report_result = {"kind": "report", "data": {"metric": {"name": "wrong_bits", "clean": 0.5},
                                                "reliance": {"warnings": ["memory collapsed to one row"]}}}
    api = fake_api(checkpoints=RUN, jobs={"rep-f1": [{"status": "done", "result": report_result}],
                                          "report-s1": [{"status": "running", "progress": 0.3}]})
    api.started.append(("s1", "report", {}))  # queued by the server on upload, not by this page
    out = checkpoints.table_step(api, CTX, None, {}, {})
    table = text(out["table"])
    assert "final.safetensors" in table and "step-001000.safetensors" in table
    assert "wrong_bits" in table and "0.500" in table  # the metric column
    assert "analysing 30%" in table and out["poll_disabled"] is False  # the upload's own analysis
    assert "memory collapsed to one row" in table
    assert [c for c in api.calls if c[0] == "jobs"] == [("jobs", {"kind": "report", "limit": 500})]
    again = checkpoints.table_step(api, CTX, None, {}, out["reports"])
    assert api.calls.count(("job", "rep-f1")) == 1  # a report is fetched once per page, then kept
    assert "memory collapsed" in text(again["table"])


# -- 9. the smaller things -------------------------------------------------------------------------------

def test_strips_grey_unscored_steps_and_have_a_colour_legend():
    trace = fake_trace()
    trace["metric_scored"] = {"axes": ["batch", "time"], "data": [[None, None, None, 1.0, 2.0]]}
    fig = figures.strips_figure(trace)
    assert fig["data"][3]["y"] == [None, None, None, 1.0, 2.0]
    assert [(s["x0"], s["x1"]) for s in fig["layout"]["shapes"]] == [(-0.5, 2.5)]  # t 0-2: unscored
    bar = fig["data"][2]
    assert bar["showscale"] and bar["colorbar"]["ticktext"] == ["0 black", "1 white"]


def test_explore_csv_holds_the_heatmaps(fake_api):
    from .test_explore import NTM_SITES

    ckpt = {"id": "c1", "name": "tiny", "arch": "ntm", "task": {"name": "copy", "params": {}}}
    view = explore.load_view(fake_api(checkpoints=[ckpt], sites={"c1": NTM_SITES}, trace=fake_trace()), "c1", None, 0)
    header = view["export"]["csv"].splitlines()[0].split(",")
    assert "memory.read_weights slot 0" in header and "memory.write_weights slot 5" in header
    assert "ms-input-num" in explore.LENGTH.control(None).className
    length = next(c for c in walk(explore.layout({}, CTX)) if getattr(c, "id", None) == "explore-length")
    assert len(length.placeholder) <= 8  # fits the box ("task's own" was cut to "task's ov")
