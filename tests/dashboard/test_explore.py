"""Explore's callback logic without a browser: which sites it asks for, the bundle the
browser scrubs, the figures, and errors shown instead of raised."""
from __future__ import annotations

import json

import pytest

from mnemoscope.dashboard import explore_data as data
from mnemoscope.dashboard import explore_figures as figures
from mnemoscope.dashboard.pages import explore

T, N, M = 5, 6, 3

NTM_SITES = [
    {"name": "memory.read", "kind": "read", "shape": [1, M], "axes": ["head", "feature"], "on_request": False, "distribution": False},
    {"name": "memory.read_weights", "kind": "read_weights", "shape": [1, N], "axes": ["head", "slot"], "on_request": False, "distribution": True},
    {"name": "memory.write_weights", "kind": "write_weights", "shape": [1, N], "axes": ["head", "slot"], "on_request": False, "distribution": True},
    {"name": "memory.matrix", "kind": "state", "shape": [N, M], "axes": ["slot", "feature"], "on_request": True, "distribution": False},
    {"name": "controller.output", "kind": "bypass", "shape": [8], "axes": ["feature"], "on_request": False, "distribution": False},
    {"name": "output", "kind": "output", "shape": [4], "axes": ["feature"], "on_request": False, "distribution": False},
]
DNC_EXTRA = [
    {"name": "memory.usage", "kind": "state", "shape": [N], "axes": ["slot"], "on_request": False, "distribution": False},
    {"name": "memory.allocation", "kind": "write_weights", "shape": [N], "axes": ["slot"], "on_request": False, "distribution": False},
    {"name": "memory.link", "kind": "state", "shape": [N, N], "axes": ["slot", "slot"], "on_request": True, "distribution": False},
]
ATTN_SITES = [
    {"name": "layers.0.attention.pattern", "kind": "attention", "shape": [2, None], "axes": ["head", "key"], "on_request": False, "distribution": True},
    {"name": "layers.1.ssm.attention", "kind": "attention", "shape": [16, None], "axes": ["channel", "key"], "on_request": True, "distribution": True},
]


def lab(data, axes):
    return {"axes": axes, "data": data}


def one_hot(i, n, scale=1.0):
    return [scale if k == i else 0.0 for k in range(n)]


def fake_trace(sites=("memory.read_weights", "memory.write_weights"), scale=1.0):
    """Sample 0 of a copy-like trace: reads walk down the slots, writes too."""
    site_data = {
        "memory.read_weights": [[one_hot(t % N, N, scale)] for t in range(T)],
        "memory.write_weights": [[one_hot((t + 1) % N, N, scale)] for t in range(T)],
        "memory.matrix": [[[float(t + s + f) / 10 for f in range(M)] for s in range(N)] for t in range(T)],
        "memory.usage": [[min(1.0, 0.2 * t)] * N for t in range(T)],
        "memory.allocation": [one_hot(t % N, N, 0.5) for t in range(T)],
    }
    axes = {"memory.read_weights": ["head", "slot"], "memory.write_weights": ["head", "slot"],
            "memory.matrix": ["slot", "feature"], "memory.usage": ["slot"], "memory.allocation": ["slot"]}
    return {
        "checkpoint_id": "c1", "task": {"name": "copy", "params": {"bits": 4}}, "seed": 0, "metric_name": "wrong_bits",
        "output_kind": "bits",
        "inputs": lab([[[1.0, 0.0, 1.0, 0.0, 0.0] for _ in range(T)]], ["batch", "time", "feature"]),
        "targets": lab([[[0.0] * 4 for _ in range(T)]], ["batch", "time", "bit"]),
        "outputs": lab([[[0.4] * 4 for _ in range(T)]], ["batch", "time", "bit"]),
        "mask": lab([[t >= 3 for t in range(T)]], ["batch", "time"]),
        "loss": lab([[0.0, 0.0, 0.0, 2.1, 2.3]], ["batch", "time"]),
        "metric": lab([[0.0, 0.0, 0.0, 1.0, 2.0]], ["batch", "time"]),
        "summary": {"loss": 2.2, "metric_per_sequence": [3.0], "chance": 4.0},
        "sites": {name: {"kind": "x", "distribution": name in ENTROPY, "axes": ["batch", "time", *axes[name]],
                         "data": [site_data[name]],
                         "entropy": ({"axes": ["batch", "time", "head"], "data": [ENTROPY[name]]}
                                     if name in ENTROPY else None)} for name in sites},
    }


# what the server's engine says of the fake weights: one-hot reads are sharp (0), the
# writes some other made-up value, so each series can be told from the other
ENTROPY = {"memory.read_weights": [[0.0] for _ in range(T)],
           "memory.write_weights": [[None]] + [[0.5] for _ in range(T - 1)]}


def test_site_roles_by_kind_and_axes():
    roles = data.site_roles(NTM_SITES + DNC_EXTRA + ATTN_SITES)
    assert roles["read"] == ["memory.read_weights"]
    assert roles["write"] == ["memory.write_weights"]
    assert roles["slots"] == ["memory.usage", "memory.allocation"]
    assert roles["matrix"] == ["memory.matrix"]  # the link matrix (slot x slot) is left out
    assert roles["attention"] == ["layers.0.attention.pattern", "layers.1.ssm.attention"]


def test_first_trace_leaves_the_matrix_for_later():
    sites = data.sites_to_record(NTM_SITES)
    assert "memory.matrix" not in sites and "memory.read_weights" in sites
    assert "memory.read" not in sites and "output" not in sites


def test_bundle_has_per_head_series_slot_by_step():
    bundle = data.build_bundle(fake_trace(), NTM_SITES, t=3)
    assert bundle["T"] == T and bundle["t"] == 3 and bundle["slotsN"] == N
    (read,) = bundle["read"]
    assert read["label"] == "memory.read_weights" and len(read["w"]) == T and len(read["w"][0]) == N
    assert read["w"][2] == one_hot(2, N)
    assert bundle["matrix_site"] == "memory.matrix"
    assert data.build_bundle(fake_trace(), NTM_SITES, t=99)["t"] == T - 1
    assert json.loads(data.bundle_text(bundle)) == bundle


def test_read_heatmap_has_one_row_per_slot():
    bundle = data.build_bundle(fake_trace(), NTM_SITES)
    fig = figures.heads_figure(bundle["read"], y_title="slot", empty="none")
    (heat,) = fig["data"]
    assert heat["type"] == "heatmap"
    assert len(heat["z"]) == N and len(heat["z"][0]) == T  # slot x timestep
    assert heat["z"][4][4] == 1.0  # slot 4 read at t=4
    assert fig["layout"]["yaxis"]["autorange"] == "reversed"
    assert fig["layout"]["xaxis"]["range"] == [-0.5, T - 0.5]


def test_thin_dnc_weights_keep_a_visible_colour_scale():
    bundle = data.build_bundle(fake_trace(scale=0.2), NTM_SITES)
    fig = figures.heads_figure(bundle["read"], y_title="slot", empty="none")
    assert fig["layout"]["coloraxis"]["cmax"] == pytest.approx(0.2)
    assert fig["data"][0]["coloraxis"] == "coloraxis"  # one scale for every head


def test_signed_implicit_attention_gets_a_diverging_scale():
    signed = [{"label": "a", "w": [[0.5, -0.25], [0.1, 0.2]]}]
    axis = figures.shared_colour_axis(signed)
    assert (axis["cmin"], axis["cmax"]) == (-0.5, 0.5) and axis["colorscale"][0][1] == "#2166ac"
    assert figures.shared_colour_axis([{"label": "p", "w": [[0.5, 0.5]]}])["cmin"] == 0


def test_heads_are_stacked_on_one_time_axis():
    series = [{"label": f"h{i}", "site": "s", "head": i, "w": [one_hot(0, N)] * T} for i in range(3)]
    fig = figures.heads_figure(series, y_title="slot", empty="")
    assert [d["yaxis"] for d in fig["data"]] == ["y", "y2", "y3"]
    assert all("xaxis" not in d for d in fig["data"])  # the shared x axis carries the cursor
    assert fig["layout"]["xaxis"]["anchor"] == "y3"


def test_ssm_channels_are_averaged_and_heads_kept():
    steps = [[[1.0 if k == 0 else 0.0 for k in range(T)], [0.0] * T] for _ in range(T)]  # [T][2 channels][keys]
    (avg,) = data.head_series("ssm.attention", steps, ["batch", "time", "channel", "key"])
    assert avg["w"][0][0] == 0.5 and "mean of 2 channels" in avg["label"]
    heads = data.head_series("attention.pattern", steps, ["batch", "time", "head", "key"])
    assert [h["head"] for h in heads] == [0, 1]


def test_entropy_is_the_servers_for_distributions_only():
    trace = fake_trace(sites=("memory.read_weights", "memory.write_weights", "memory.usage", "memory.allocation"))
    series = data.entropy_series(trace, NTM_SITES + DNC_EXTRA)
    assert [s["label"] for s in series] == ["memory.read_weights", "memory.write_weights"]
    assert series[0]["h"] == [0.0] * T and series[1]["h"] == [None] + [0.5] * (T - 1)  # as the server sent them
    fig = figures.entropy_figure(series, T)
    assert [d["y"] for d in fig["data"]] == [s["h"] for s in series]
    assert {s["name"] for s in fig["layout"]["shapes"]} == {"diffuse", "sharp"}
    diffuse = next(s for s in fig["layout"]["shapes"] if s["name"] == "diffuse")
    assert (diffuse["y0"], diffuse["y1"]) == (0.9, 1.0)


def test_entropy_of_ssm_channels_is_their_mean_and_heads_stay_apart():
    site = {"axes": ["batch", "time", "channel", "key"], "data": [[[[1.0]] * 2] * 2],
            "entropy": {"axes": ["batch", "time", "channel"], "data": [[[0.2, 0.4], [None, 0.6]]]}}
    heads = {"axes": ["batch", "time", "head", "key"], "data": [[[[1.0]] * 2] * 2],
             "entropy": {"axes": ["batch", "time", "head"], "data": [[[0.2, 0.4], [0.1, 0.6]]]}}
    trace = {"sites": {"layers.1.ssm.attention": site, "layers.0.attention.pattern": heads}}
    series = data.entropy_series(trace, ATTN_SITES)
    assert [s["label"] for s in series] == ["layers.0.attention.pattern head 0", "layers.0.attention.pattern head 1",
                                           "layers.1.ssm.attention (mean of 2 channels)"]
    assert series[0]["h"] == [0.2, 0.1] and series[2]["h"] == [pytest.approx(0.3), 0.6]


def test_strips_show_input_target_output_and_metric():
    fig = figures.strips_figure(fake_trace())
    kinds = [d["type"] for d in fig["data"]]
    assert kinds == ["heatmap", "heatmap", "heatmap", "bar"]
    assert len(fig["data"][0]["z"]) == 5 and len(fig["data"][0]["z"][0]) == T  # channels x time
    assert fig["data"][3]["y"] == [None, None, None, 1.0, 2.0]  # unscored steps have no bar


def test_load_view_asks_for_the_chosen_length_and_seed(fake_api):
    ckpt = {"id": "c1", "name": "tiny", "arch": "ntm", "task": {"name": "copy", "params": {"min_length": 1, "max_length": 20}}}
    api = fake_api(checkpoints=[ckpt], sites={"c1": NTM_SITES}, trace=fake_trace())
    view = explore.load_view(api, "c1", "5", "7")
    assert view["error"] is None
    call = next(c for c in api.calls if c[0] == "trace")
    assert call[2]["params"] == {"min_length": 5, "max_length": 5} and call[2]["seed"] == 7
    assert call[2]["sites"] == ["memory.read_weights", "memory.write_weights"]
    assert view["slider_max"] == T - 1 and view["show_matrix"] and not view["show_slots"]
    assert "wrong_bits 3.000" in view["status"]
    assert view["bundle"]["request"] == {"checkpoint": "c1", "params": {"min_length": 5, "max_length": 5}, "seed": 7}
    assert view["export"]["csv"].splitlines()[0].startswith("t,scored,loss,wrong_bits,entropy memory.read_weights")


def test_load_view_shows_api_errors_instead_of_raising(fake_api):
    api = fake_api(checkpoints=[], fail={"checkpoint": "no checkpoint with id 'gone' (HTTP 404)"})
    view = explore.load_view(api, "gone", None, 0)
    assert view["error"] == "no checkpoint with id 'gone' (HTTP 404)" and view["bundle"] is None
    view = explore.load_view(api, "c1", "-3", 0)
    assert view["error"] == "length must be at least 1, not -3"
    assert explore.load_view(api, None, None, 0)["status"] == "Choose a checkpoint to trace."


def test_matrix_is_fetched_for_the_same_sample(fake_api):
    api = fake_api(trace=fake_trace(sites=("memory.matrix",)))
    bundle = {"matrix_site": "memory.matrix", "request": {"checkpoint": "c1", "params": {"min_length": 5, "max_length": 5}, "seed": 7}}
    matrix = explore.load_matrix(api, bundle)
    call = api.calls[-1]
    assert call[2] == {"params": {"min_length": 5, "max_length": 5}, "seed": 7, "samples": 1, "sites": ["memory.matrix"]}
    assert len(matrix["m"]) == T and len(matrix["m"][0]) == N and len(matrix["m"][0][0]) == M
    assert matrix["absmax"] == pytest.approx((T - 1 + N - 1 + M - 1) / 10)
    assert explore.load_matrix(api, {"matrix_site": None}) is None
    failing = fake_api(fail={"trace": "the server is busy (HTTP 503)"})
    assert explore.load_matrix(failing, bundle) == {"error": "the server is busy (HTTP 503)"}


def test_rounding_keeps_missing_values():
    assert data.rounded([[0.123456, None], [1.0, 2.0]]) == [[0.1235, None], [1.0, 2.0]]
    assert data.rounded([[1.0], [2.0, 3.0]]) == [[1.0], [2.0, 3.0]]  # ragged rows
