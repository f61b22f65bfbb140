"""Explore on long sequences without a browser: the trace asked at the figures' resolution,
a reduced answer drawn on a timestep axis, zooming into a window, the matrix pooled to fit."""
from __future__ import annotations

from mnemoscope.dashboard import explore_data as data
from mnemoscope.dashboard import explore_figures as figures
from mnemoscope.dashboard.pages import explore

from .test_explore import NTM_SITES, lab, one_hot

T, BIN, N = 4096, 8, 6
EDGES = [*range(0, T, BIN), T]


def reduced_trace(window=None, max_points=None):
    """What the server answers for a copy of T = 4096 steps with reduce {max_points: 512}
    (or a window at full resolution): reads one slot per bin, writes likewise."""
    t0, t1 = window or (0, T)
    width = 1 if window else BIN
    edges = [*range(t0, t1, width), t1]
    bins = len(edges) - 1
    reads = [[one_hot((edges[i] // BIN) % N, N)] for i in range(bins)]
    return {
        "checkpoint_id": "c1", "metric_name": "wrong_bits", "output_kind": "bits",
        "summary": {"loss": 0.5, "metric_per_sequence": [3.0], "chance": 2.0},
        "inputs": lab([[[0.0, 1.0]] * bins], ["batch", "time", "feature"]),
        "targets": lab([[[1.0]] * bins], ["batch", "time", "bit"]),
        "outputs": lab([[[0.5]] * bins], ["batch", "time", "bit"]),
        "mask": lab([[i >= bins // 2 for i in range(bins)]], ["batch", "time"]),
        "loss": lab([[0.1] * bins], ["batch", "time"]),
        "metric": lab([[0.0] * bins], ["batch", "time"]),
        "sites": {name: {**lab([reads], ["batch", "time", "head", "slot"]),
                         "entropy": lab([[[0.2]] * bins], ["batch", "time", "head"])}
                  for name in ("memory.read_weights", "memory.write_weights")},
        "time": {"length": T, "window": [t0, t1], "bin": width, "edges": edges},
    }


def test_a_reduced_trace_is_drawn_in_real_timesteps():
    bundle = data.build_bundle(reduced_trace(), NTM_SITES, t=1234)
    assert bundle["T"] == T and bundle["window"] == [0, T] and bundle["edges"] == EDGES and bundle["t"] == 1234
    assert len(bundle["read"][0]["w"]) == T // BIN
    fig = figures.heads_figure(bundle["read"], y_title="slot", empty="", edges=bundle["edges"])
    heat = fig["data"][0]
    assert len(heat["z"][0]) == T // BIN and heat["x"][0] == 3.5 and heat["x"][-1] == T - 4.5
    assert fig["layout"]["xaxis"]["range"] == [-0.5, T - 0.5]
    strips = figures.strips_figure(reduced_trace())
    assert strips["data"][0]["x"][:2] == [3.5, 11.5] and strips["layout"]["xaxis"]["range"] == [-0.5, T - 0.5]
    # the unscored first half is one grey run, in timesteps
    assert [(s["x0"], s["x1"]) for s in strips["layout"]["shapes"]] == [(-0.5, T / 2 - 0.5)]
    ent = figures.entropy_figure(data.entropy_series(reduced_trace(), NTM_SITES), T, bundle["edges"])
    assert ent["data"][0]["x"][-1] == T - 4.5 and ent["data"][0]["mode"] == "lines"
    assert data.trace_rows(reduced_trace(), [], bundle)[2]["t"] == 16  # export rows: one per bin, at its first step


def test_a_short_trace_is_unchanged():
    short = reduced_trace(window=(0, 9))
    short.pop("time")
    bundle = data.build_bundle(short, NTM_SITES)
    assert bundle["T"] == 9 and bundle["edges"] is None and bundle["window"] == [0, 9]
    assert figures.heads_figure(bundle["read"], y_title="slot", empty="")["data"][0]["x"] == list(range(9))


def test_load_view_asks_for_the_figures_resolution_and_a_window(fake_api):
    ckpt = {"id": "c1", "name": "long", "arch": "ntm", "task": {"name": "copy", "params": {"max_length": 2047}}}
    api = fake_api(checkpoints=[ckpt], sites={"c1": NTM_SITES},
                   trace=lambda cid, window=None, **kw: reduced_trace(window))
    view = explore.load_view(api, "c1", None, 0)
    call = next(c for c in api.calls if c[0] == "trace")
    assert call[2]["max_points"] == data.FIGURE_POINTS and "window" not in call[2]
    assert (view["slider_min"], view["slider_max"]) == (0, T - 1) and max(view["marks"]) < T
    assert "4096 steps drawn as 512 columns of 8" in view["status"]
    zoomed = explore.load_view(api, "c1", None, 0, t=5, window=(1000, 1200))
    call = [c for c in api.calls if c[0] == "trace"][-1]
    assert call[2]["window"] == (1000, 1200)
    assert (zoomed["slider_min"], zoomed["slider_max"], zoomed["t"]) == (1000, 1199, 1000)
    assert zoomed["bundle"]["edges"] is None and zoomed["bundle"]["request"]["window"] == [1000, 1200]
    assert zoomed["read"]["data"][0]["x"][0] == 1000 and "steps 1000-1199" in zoomed["status"]


def test_zooming_picks_the_window_and_a_double_click_the_whole_sequence():
    span = {"T": T, "window": [0, T]}
    assert explore.window_from_zoom("explore-read", {"xaxis.range[0]": 99.6, "xaxis.range[1]": 300.2}, span) == (100, 301)
    assert explore.window_from_zoom("explore-attention", {"yaxis.range[0]": 300.2, "yaxis.range[1]": 99.6}, span) == (100, 301)
    assert explore.window_from_zoom("explore-read", {"autosize": True}, span) is False  # a resize: nothing to fetch
    assert explore.window_from_zoom("explore-read", {"xaxis.autorange": True}, span) is False  # already all of it
    zoomed = {"T": T, "window": [100, 301]}
    assert explore.window_from_zoom("explore-read", {"xaxis.autorange": True}, zoomed) is None
    assert explore.window_from_zoom("explore-read", {"xaxis.range": [-40, 5000]}, zoomed) is None  # all of it
    assert explore.window_from_zoom("explore-read", {"xaxis.range[0]": 3, "xaxis.range[1]": 3.2}, span) is False


def test_the_matrix_of_a_long_trace_is_pooled_to_fit(fake_api):
    width = 20
    api = fake_api(trace={"sites": {"memory.matrix": lab([[[[0.5] * width] * 128] * 156], ["batch", "time", "slot", "feature"])},
                          "time": {"length": T, "window": [0, T], "bin": 27, "edges": [*range(0, T, 27), T]},
                          "inputs": lab([[0] * 152], ["batch", "time"])})
    bundle = {"matrix_site": "memory.matrix", "T": T, "window": [0, T], "matrix_values": 128 * width,
              "request": {"checkpoint": "c1", "params": {}, "seed": 0}}
    matrix = explore.load_matrix(api, bundle)
    assert api.calls[-1][2]["max_points"] == data.MAX_MATRIX_VALUES // (128 * width) == 156
    assert matrix["edges"][:2] == [0, 27] and len(matrix["m"]) == 156
    # a zoomed window: the same window asked again (short enough: not reduced)
    explore.load_matrix(api, {**bundle, "window": [100, 200], "request": {**bundle["request"], "window": [100, 200]}})
    assert api.calls[-1][2]["window"] == (100, 200) and "max_points" not in api.calls[-1][2]
