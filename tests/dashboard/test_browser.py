"""The real dashboard in headless Chromium against `mnemoscope serve`: upload through the
page, explore and scrub, ablate, patch, gradients, compare, exports, shared URLs and
error messages. Screenshots of every page go to test-artifacts/.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright; when it is missing these
tests fail (see the `browser` fixture), they do not skip.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mnemoscope.dashboard.components import VERDICT_TEXT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JOB_TIMEOUT = 240_000  # ms: a job's worker process imports torch before it starts


def on_graph(page, graph_id: str, expr: str):
    """Evaluate `expr` with `gd` bound to the Plotly graph inside #graph_id."""
    return page.evaluate(f"() => {{ const gd = document.querySelector('#{graph_id} .js-plotly-plot'); return {expr}; }}")


def wait_for_heatmap(page, graph_id: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        f"() => {{ const gd = document.querySelector('#{graph_id} .js-plotly-plot');"
        " return !!(gd && gd._fullData && gd._fullData.some(t => t.type === 'heatmap')"
        " && gd.querySelector('.hm image')); }", timeout=timeout)


def graph_title(page, graph_id: str) -> str:
    return page.locator(f"#{graph_id} .gtitle").first.text_content()


def text_of(selector: str) -> str:
    """A null-safe JS expression for an element's text (for wait_for_function)."""
    return f"((document.querySelector({selector!r}) || {{}}).innerText || '')"


def query(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def test_upload_by_drag_and_drop_and_by_choosing(page, live_server, checkpoint_files, screenshot):
    page.goto(f"{live_server}/dashboard/")
    page.wait_for_selector("#upload-zone")
    # drop: a File built in the page from the checkpoint's bytes, as a DataTransfer
    data = list(checkpoint_files["dnc"].read_bytes())
    page.evaluate(
        """(bytes) => {
            const file = new File([new Uint8Array(bytes)], 'tiny-dnc.safetensors');
            const dt = new DataTransfer();
            dt.items.add(file);
            const zone = document.getElementById('upload-zone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""", data)
    message = page.locator("#upload-message .ms-success")
    message.wait_for()
    assert "tiny-dnc (dnc, copy" in message.inner_text()
    assert "uploaded tiny-dnc.safetensors" in page.locator("#upload-progress-label").inner_text()
    page.locator("#checkpoints-list tr[data-checkpoint]", has_text="tiny-dnc").wait_for()

    # choose: the zone opens a file chooser; the same bytes again are recognised
    with page.expect_file_chooser() as chooser:
        page.click("#upload-zone")
    chooser.value.set_files(str(checkpoint_files["ntm"]))
    page.wait_for_function(f"{text_of('#upload-message')}.includes('tiny-ntm')")
    page.locator("#checkpoints-list tr[data-checkpoint]", has_text="tiny-ntm").wait_for()
    assert page.locator("#checkpoints-list .ms-badge").count() >= 2
    screenshot(page, "checkpoints")

    # a file the server refuses: the reason is shown, the page keeps working
    page.evaluate(
        """() => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array([1, 2, 3])], 'broken.safetensors'));
            document.getElementById('upload-zone').dispatchEvent(
                new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""")
    error = page.locator("#upload-message .ms-error")
    error.wait_for()
    assert "broken.safetensors" in error.inner_text() and "HTTP 422" in error.inner_text()


def test_explore_heatmaps_and_scrubbing(page, live_server, uploaded, screenshot):
    ntm = uploaded["ntm"]
    slots = ntm["config"]["memory_slots"]
    page.goto(f"{live_server}/dashboard/explore?checkpoint={ntm['id']}&length=4&seed=2")
    wait_for_heatmap(page, "explore-read")
    # one heatmap row per memory slot, one column per timestep (copy of length 4: T = 9)
    rows, cols = on_graph(page, "explore-read", "[gd._fullData[0].z.length, gd._fullData[0].z[0].length]")
    assert (rows, cols) == (slots, 9)
    wait_for_heatmap(page, "explore-write")
    wait_for_heatmap(page, "explore-matrix-t")
    page.wait_for_function("((document.querySelector('#explore-weights-t .gtitle') || {}).textContent || '').startsWith('t = 0 ')")
    assert page.locator("#explore-t-label").inner_text() == "t = 0 / 8"
    matrix_before = on_graph(page, "explore-matrix-t", "JSON.stringify(gd.data[0].z)")
    cursor_before = page.locator("#explore-read .ms-cursor").first.bounding_box()

    # scrub with the keyboard: every selected-timestep panel follows
    page.locator("#explore-t [role=slider]").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("((document.querySelector('#explore-weights-t .gtitle') || {}).textContent || '').startsWith('t = 3 ')")
    page.wait_for_function("((document.querySelector('#explore-matrix-t .gtitle') || {}).textContent || '').startsWith('t = 3 ')")
    assert page.locator("#explore-t-label").inner_text() == "t = 3 / 8"
    assert on_graph(page, "explore-matrix-t", "JSON.stringify(gd.data[0].z)") != matrix_before
    cursor_after = page.locator("#explore-read .ms-cursor").first.bounding_box()
    assert cursor_after["x"] > cursor_before["x"] + 10  # the cursor moved right over the heatmap
    page.wait_for_function("location.search.includes('t=3')")
    assert query(page) == {"checkpoint": ntm["id"], "length": "4", "seed": "2", "t": "3"}

    # click a heatmap column: that timestep is selected
    page.locator("#explore-read").scroll_into_view_if_needed()
    box = on_graph(page, "explore-read", "(() => { const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;"
                   " const r = gd.getBoundingClientRect();"
                   " return [r.left + xa._offset + xa.l2p(6), r.top + ya._offset + ya._length / 2]; })()")
    page.mouse.click(box[0], box[1])
    page.wait_for_function(f"{text_of('#explore-t-label')} === 't = 6 / 8'")

    # play moves on by itself, pause stops it
    page.click("#explore-play")
    page.wait_for_function(f"{text_of('#explore-t-label')} !== 't = 6 / 8'")
    page.click("#explore-play")
    page.wait_for_function(f"{text_of('#explore-play')} === 'Play'")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "explore")

    # the URL carries the view: a reload comes back to the same checkpoint, sample and step
    page.goto(f"{live_server}/dashboard/explore?checkpoint={ntm['id']}&length=4&seed=2&t=5")
    wait_for_heatmap(page, "explore-read")
    page.wait_for_function(f"{text_of('#explore-t-label')} === 't = 5 / 8'")
    assert page.locator("#explore-length").input_value() == "4"
    assert page.locator("#explore-seed").input_value() == "2"


def test_explore_dnc_usage_and_entropy(page, live_server, uploaded, screenshot):
    dnc = uploaded["dnc"]
    page.goto(f"{live_server}/dashboard/explore?checkpoint={dnc['id']}&length=3")
    wait_for_heatmap(page, "explore-read")
    wait_for_heatmap(page, "explore-slots")
    names = on_graph(page, "explore-slots", "gd.layout.annotations.map(a => a.text)")
    assert names == ["memory.usage", "memory.allocation"]
    page.wait_for_function("() => { const gd = document.querySelector('#explore-entropy .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length > 0; }")
    bands = on_graph(page, "explore-entropy", "gd.layout.shapes.map(s => [s.name, s.y0, s.y1])")
    assert ["diffuse", 0.9, 1.0] in bands and ["sharp", 0.0, 0.1] in bands
    # DNC weightings sum to at most one; the per-step panel says how much
    assert "mass read" in graph_title(page, "explore-weights-t")
    screenshot(page, "explore-dnc")


def test_explore_shows_api_errors_in_the_page(page, live_server, uploaded):
    page.goto(f"{live_server}/dashboard/explore?checkpoint=doesnotexist")
    error = page.locator(".ms-error", has_text="no checkpoint with id").first
    error.wait_for()
    assert page.locator("header.ms-header").is_visible()  # the page itself still works
    # a length over the server's limit (GET /api/kinds): a sentence naming it, not a traceback
    page.goto(f"{live_server}/dashboard/explore?checkpoint={uploaded['ntm']['id']}&length=999999")
    error = page.locator("#explore-error .ms-error").first
    error.wait_for()
    limit = next(k for k in httpx.get(f"{live_server}/api/kinds").json() if k["name"] == "trace")["task_param_max"]
    assert f"length must be at most {limit}, not 999999" in error.inner_text() and "Traceback" not in page.content()
    assert page.locator("#explore-length").get_attribute("max") == str(limit)  # the input is bounded too


def test_ablation_shows_metric_change_and_verdict(page, live_server, uploaded, screenshot):
    ntm = uploaded["ntm"]
    page.goto(f"{live_server}/dashboard/ablate?checkpoint={ntm['id']}&mode=zero&steps=4-8&samples=8")
    page.wait_for_function(f"{text_of('#ablate-sites')}.includes('memory.read')")
    assert page.locator("#ablate-steps").input_value() == "4-8"
    # the sequences input is bounded by the server's limits and keeps the URL's value
    page.wait_for_function("document.querySelector('#ablate-samples').getAttribute('max') !== null")
    limits = next(k for k in httpx.get(f"{live_server}/api/kinds").json() if k["name"] == "ablations")["limits"]
    assert page.locator("#ablate-samples").get_attribute("max") == str(limits["samples"]["maximum"])
    assert page.locator("#ablate-samples").input_value() == "8"
    assert page.locator("#ablate-seed").input_value() == str(limits["seed"]["default"])  # the server's default
    assert page.locator("#ablate-mode input[value=zero]").is_checked()
    page.click("#ablate-run")
    page.locator("#ablate-progress .ms-progress").wait_for()
    verdict = page.locator("#ablate-verdict .ms-verdict")
    verdict.wait_for(timeout=JOB_TIMEOUT)
    assert verdict.get_attribute("data-verdict") in VERDICT_TEXT  # one of the engine's five verdicts
    assert "score" in page.locator("#ablate-reliance-score").inner_text()
    assert "95% CI" in verdict.inner_text()
    assert page.locator("#ablate-progress [data-status]").get_attribute("data-status") == "done"
    names = on_graph(page, "ablate-metric", "gd.data.map(t => t.name)")
    assert names == ["clean", "ablated"]
    shaded = on_graph(page, "ablate-metric", "gd.layout.shapes.filter(s => s.name === 'ablated').map(s => [s.x0, s.x1])")
    assert shaded == [[3.5, 8.5]]
    assert "→" in page.locator("#ablate-summary").inner_text()
    screenshot(page, "ablate")

    # the result downloads as JSON and CSV
    with page.expect_download() as dl:
        page.click("#ablate-verdict ~ * button:has-text('JSON'), .ms-export button:has-text('JSON')")
    result = json.loads(Path(dl.value.path()).read_text())
    assert result["reliance"]["verdict"] == verdict.get_attribute("data-verdict")
    with page.expect_download() as dl:
        page.click(".ms-export button:has-text('CSV')")
    assert Path(dl.value.path()).read_text().startswith("t,metric_clean,metric_ablated")


def test_patching_heatmap(page, live_server, uploaded, screenshot):
    ntm = uploaded["ntm"]
    page.goto(f"{live_server}/dashboard/patch?checkpoint={ntm['id']}&pairs=4&seed=1")
    page.wait_for_function(f"{text_of('#patch-checkpoint')}.includes('tiny-ntm')")
    page.click("#patch-run")
    page.locator("#patch-summary table").wait_for(timeout=JOB_TIMEOUT)
    wait_for_heatmap(page, "patch-heatmap")
    heat = on_graph(page, "patch-heatmap", "(() => { const t = gd._fullData.find(t => t.type === 'heatmap');"
                    " return {y: t.y, rows: t.z.length, cols: t.z[0].length, hover: t.hovertemplate}; })()")
    assert "memory.read" in heat["y"] and heat["rows"] == len(heat["y"])
    assert "recovery %{z:.4f}" in heat["hover"]
    # the timesteps where clean and corrupted answers differ are outlined
    marked = on_graph(page, "patch-heatmap", "gd.layout.shapes.filter(s => s.name === 'differs').length")
    assert marked > 0
    # hovering a cell shows its exact value
    page.locator("#patch-heatmap").scroll_into_view_if_needed()
    x, y = on_graph(page, "patch-heatmap", "(() => { const t = gd._fullData.find(t => t.type === 'heatmap');"
                    " const xa = gd._fullLayout[t.xaxis.replace('x', 'xaxis')], ya = gd._fullLayout[t.yaxis.replace('y', 'yaxis')];"
                    " const r = gd.getBoundingClientRect();"
                    " return [r.left + xa._offset + xa.l2p(t.z[0].length - 1), r.top + ya._offset + ya.l2p(0)]; })()")
    page.mouse.move(x, y)
    hover = page.locator("#patch-heatmap .hoverlayer .hovertext")
    hover.wait_for()
    assert "recovery" in hover.text_content()
    page.mouse.move(5, 5)
    screenshot(page, "patch")

    # figures export as SVG (and PNG)
    with page.expect_download() as dl:
        page.click("#patch-heatmap-card button[data-format=svg]")
    assert dl.value.suggested_filename == "patching-recovery.svg"
    assert Path(dl.value.path()).read_text().lstrip().startswith("<svg")


def test_gradients_and_compare(page, live_server, uploaded, screenshot):
    ntm, dnc = uploaded["ntm"], uploaded["dnc"]
    page.goto(f"{live_server}/dashboard/gradients?checkpoint={ntm['id']},{dnc['id']}&samples=4")
    page.click("#gradients-run")
    page.wait_for_function("() => { const gd = document.querySelector('#gradients-series .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length === 3; }", timeout=JOB_TIMEOUT)
    groups = on_graph(page, "gradients-groups", "gd.data[0].x")
    assert "memory" in groups
    assert on_graph(page, "gradients-steps", "gd.data.map(t => t.name)") == ["memory reads", "bypass"]
    screenshot(page, "gradients")

    page.goto(f"{live_server}/dashboard/compare?checkpoint={ntm['id']},{dnc['id']}&samples=4")
    page.click("#compare-run")
    table = page.locator("#compare-result")
    table.wait_for(timeout=JOB_TIMEOUT)
    text = table.inner_text()
    assert "tiny-ntm" in text and "tiny-dnc" in text
    assert "memory necessity (95% CI)" in text and "memory sufficiency (95% CI)" in text
    assert table.locator(".ms-badge").count() == 2
    screenshot(page, "compare")

    # the reports set the checkpoints' verdicts, shown as badges in the list
    page.goto(f"{live_server}/dashboard/")
    page.locator("#checkpoints-list").wait_for()
    badges = page.locator("#checkpoints-list .ms-badge").all_inner_texts()
    assert any(b.split()[0] in ("functional", "partial", "decorative") for b in badges)


def test_navigation_keeps_the_checkpoint_and_works_at_both_widths(page, live_server, uploaded, screenshot):
    ntm = uploaded["ntm"]
    page.goto(f"{live_server}/dashboard/explore?checkpoint={ntm['id']}")
    wait_for_heatmap(page, "explore-read")
    page.wait_for_function(f"(document.querySelector('#nav-patch').getAttribute('href') || '').includes('{ntm['id']}')")
    page.click("#nav-patch")
    page.wait_for_selector("#patch-run")
    assert urlsplit(page.url).path == "/dashboard/patch" and query(page)["checkpoint"] == ntm["id"]
    # nothing overflows sideways at 1280x800; wide screens put panels side by side
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.set_viewport_size({"width": 2200, "height": 1100})
    page.goto(f"{live_server}/dashboard/explore?checkpoint={ntm['id']}")
    wait_for_heatmap(page, "explore-write")
    read, write = (page.locator(f"#explore-{k}-card").bounding_box() for k in ("read", "write"))
    assert abs(read["y"] - write["y"]) < 2 and write["x"] > read["x"] + read["width"] - 1
    screenshot(page, "explore-wide")


def test_root_redirects_to_the_dashboard(live_server):
    r = httpx.get(f"{live_server}/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"].endswith("/dashboard/")


def test_delete_asks_first(page, live_server, checkpoint_files):
    path = checkpoint_files["spare"]
    with open(path, "rb") as f:
        spare = httpx.post(f"{live_server}/api/checkpoints", files={"file": (path.name, f)}, timeout=60).json()
    page.goto(f"{live_server}/dashboard/")
    row = page.locator(f"#checkpoints-list tr[data-checkpoint='{spare['id']}']")
    row.wait_for()
    page.once("dialog", lambda dialog: dialog.dismiss())  # "no": nothing happens
    row.locator("button:has-text('Delete')").click()
    assert httpx.get(f"{live_server}/api/checkpoints/{spare['id']}").status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button:has-text('Delete')").click()
    row.wait_for(state="detached")
    assert httpx.get(f"{live_server}/api/checkpoints/{spare['id']}").status_code == 404


# -- a researcher's first session (issue 17) ------------------------------------------------------------

ZOO = Path(__file__).resolve().parents[2] / "mnemoscope" / "zoo"
SERIES_FILES = sorted(ZOO.glob("ntm-copy-small-controller-step-*.safetensors")) + [
    ZOO / "ntm-copy-small-controller.safetensors"]


def upload_file(live_server: str, path: Path, name: str | None = None) -> dict:
    with open(path, "rb") as f:
        r = httpx.post(f"{live_server}/api/checkpoints", files={"file": (name or path.name, f)}, timeout=120)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_gradients_with_a_ten_checkpoint_series_reaches_the_page(page, live_server, screenshot):
    """Point 1 and 2: ten fresh jobs finish and every checkpoint is drawn and listed."""
    ids = [upload_file(live_server, path)["id"] for path in SERIES_FILES]
    assert len(ids) == 10
    page.goto(f"{live_server}/dashboard/gradients?checkpoint={','.join(ids)}&samples=4&seed=11")
    page.wait_for_function(f"{text_of('#gradients-checkpoint')}.includes('step')")
    page.click("#gradients-run")
    page.wait_for_function("() => { const gd = document.querySelector('#gradients-series .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length === 3 && gd.data[0].x.length === 10; }",
                           timeout=JOB_TIMEOUT)
    assert page.locator("#gradients-progress [data-status]").get_attribute("data-status") == "done"
    names = on_graph(page, "gradients-groups", "gd.data.map(t => t.name)")
    assert len(names) == 10 and names[-1] == "step 3000"  # the final model is drawn
    assert page.locator("#gradients-summary-table tbody tr").count() == 10
    # the legend sits under the bars, not over them
    legend, plot = (on_graph(page, "gradients-groups", f"gd.querySelector('{sel}').getBoundingClientRect().top")
                    for sel in (".legend", ".bars, .barlayer"))
    assert legend > plot
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top in a full-page shot
    screenshot(page, "gradients-series-10")


def test_compare_on_mqar_and_a_hybrid(page, live_server, screenshot):
    """Point 3: columns in the order chosen, the hybrid's state rank charted, entropy named."""
    hybrid = upload_file(live_server, ZOO / "hybrid-short-window.safetensors")
    mqar = upload_file(live_server, ZOO / "mqar-deltanet.safetensors")
    page.goto(f"{live_server}/dashboard/compare?checkpoint={mqar['id']},{hybrid['id']}")
    page.wait_for_function(f"{text_of('#compare-checkpoint')}.includes('mqar-deltanet')")
    page.click("#compare-run")
    table = page.locator("#compare-result")
    table.wait_for(timeout=JOB_TIMEOUT)
    heads = table.locator("thead th").all_inner_texts()
    assert heads[1].startswith("mqar-deltanet") and heads[2].startswith("hybrid-short-window")  # as chosen
    text = table.inner_text()
    assert "state rank" in text and "-0.00" not in text
    assert "attention layers.2.attention.pattern" in text  # what the hybrid's entropy was taken from
    ranks = on_graph(page, "compare-figure", "gd.data[2].y")
    assert all(isinstance(v, (int, float)) and v > 0 for v in ranks)  # the chart is not empty
    screenshot(page, "compare-mqar")


def test_ablate_on_mqar_counts_scored_positions(page, live_server, screenshot):
    """Point 4: per-step accuracy on its own scale, unscored steps grey, 'all' shaded,
    and a shared URL shows the result again."""
    mqar = upload_file(live_server, ZOO / "mqar-deltanet.safetensors")
    page.goto(f"{live_server}/dashboard/ablate?checkpoint={mqar['id']}&mode=resample&steps=all&samples=16")
    page.wait_for_function(f"{text_of('#ablate-sites')}.includes('memory.read')")
    page.locator("#ablate-steps").fill("99-120")
    assert page.evaluate("(() => { const el = document.querySelector('#ablate-steps');"
                         " return el.scrollWidth <= el.clientWidth; })()")  # "99-120" fits, not "99-12"
    page.locator("#ablate-steps").fill("all")
    page.click("#ablate-run")
    page.locator("#ablate-verdict .ms-verdict").wait_for(timeout=JOB_TIMEOUT)
    clean = on_graph(page, "ablate-metric", "gd.data[0].y")
    scored = [v for v in clean if v is not None]
    assert None in clean and max(scored) > 0.3  # accuracy over scored positions, not 0.08
    assert "scored positions" in on_graph(page, "ablate-metric", "gd.layout.yaxis.title.text")
    shapes = on_graph(page, "ablate-metric", "gd.layout.shapes.map(s => s.name)")
    assert "ablated" in shapes and "unscored" in shapes
    flips = on_graph(page, "ablate-change", "gd.data[1].y")
    assert all(f is None for f, c in zip(flips, clean) if c is None)  # nothing "flipped" where nothing is scored
    page.wait_for_function("location.search.includes('run=1')")
    screenshot(page, "ablate-mqar")
    # the shared URL brings the result back, not just the form
    page.goto(page.url)
    page.wait_for_function("() => { const gd = document.querySelector('#ablate-metric .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length === 2; }", timeout=JOB_TIMEOUT)


def test_explore_a_hybrid_layer_by_layer(page, live_server, screenshot):
    """Point 6: a layer picker; the attention layer's eight heads as small multiples, and
    attention at t one panel per head."""
    hybrid = upload_file(live_server, ZOO / "hybrid-short-window.safetensors")
    page.goto(f"{live_server}/dashboard/explore?checkpoint={hybrid['id']}")
    page.wait_for_function(f"{text_of('#explore-status')}.includes('layer 0')")
    assert page.locator("#explore-layer-fields").is_visible()
    page.click("#explore-layer")
    page.get_by_text("layer 2 · attention", exact=True).last.click()
    page.wait_for_function(f"{text_of('#explore-status')}.includes('layer 2 · attention')")
    wait_for_heatmap(page, "explore-attention")
    page.wait_for_function("location.search.includes('layer=2')")
    panels = on_graph(page, "explore-attention", "gd.data.filter(t => t.type === 'heatmap').length")
    assert panels == 8 and "not drawn" not in page.locator("#explore-status").inner_text()
    page.locator("#explore-t [role=slider]").focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("((document.querySelector('#explore-attention-t .gtitle') || {}).textContent || '')"
                           ".startsWith('query t = 10')")
    axes = on_graph(page, "explore-attention-t", "gd.data.map(t => t.yaxis)")
    assert len(axes) == 8 and len(set(axes)) == 8  # one panel per head, not eight stacked bars
    entropy = on_graph(page, "explore-entropy", "gd.data.map(t => t.name)")
    assert entropy and all(name.startswith("layers.2.attention.pattern") for name in entropy)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "explore-hybrid-attention-layer")


def test_own_runs_are_told_apart_and_analysed_without_a_click(page, live_server, tmp_path, screenshot):
    """Point 7: one run's final and step files, same name: the file names show in the
    table and the pickers, the metric column is filled, and both get a verdict without
    anyone pressing Analyze."""
    import torch

    from mnemoscope.models import build_model
    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.tasks import make_task

    from .conftest import NTM_CONFIG, TINY_TASK

    files = {}
    for seed, file in ((5, "final.safetensors"), (6, "step-001000.safetensors")):
        torch.manual_seed(seed)
        files[file] = save_checkpoint(tmp_path / file, build_model("ntm", NTM_CONFIG), task=make_task(TINY_TASK),
                                      step=1000, name="my-run", metrics={"wrong_bits": 1.5 + seed})
    page.goto(f"{live_server}/dashboard/")
    page.wait_for_selector("#upload-zone")
    for file, path in files.items():
        page.evaluate(
            """([bytes, name]) => {
                const dt = new DataTransfer();
                dt.items.add(new File([new Uint8Array(bytes)], name));
                document.getElementById('upload-zone').dispatchEvent(
                    new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
            }""", [list(path.read_bytes()), file])
        page.wait_for_function(f"{text_of('#upload-message')}.includes('{file}')")
    rows = {file: page.locator("#checkpoints-list tr[data-checkpoint]", has_text=file) for file in files}
    for file, row in rows.items():
        row.wait_for()
        assert "my-run" in row.inner_text() and "wrong_bits" in row.locator(".ms-metric").inner_text()
    assert "6.500" in rows["final.safetensors"].locator(".ms-metric").inner_text()
    # analysed without a click: each row reaches a verdict by itself
    for row in rows.values():
        row.locator(", ".join(f".ms-badge-{v}" for v in VERDICT_TEXT)).wait_for(timeout=JOB_TIMEOUT)
    screenshot(page, "checkpoints-own-run")
    cid = rows["final.safetensors"].get_attribute("data-checkpoint")
    page.goto(f"{live_server}/dashboard/explore?checkpoint={cid}")
    page.wait_for_function(f"{text_of('#explore-checkpoint')}.includes('final.safetensors')")
