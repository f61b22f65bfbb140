"""A long trace in the real dashboard (headless Chromium against `mnemoscope serve`): copy
of length 2047 (T = 4095) opens max-pooled to the figures' width on a timestep axis, the
scrubber reaches any step, and zooming fetches a window at full resolution."""
from __future__ import annotations

import pytest

from .test_browser import graph_title, on_graph, text_of, wait_for_heatmap

pytestmark = [pytest.mark.browser, pytest.mark.slow]

T = 4095  # copy of length 2047: 2L + 1 steps, the longest copy within the server's 4096


def test_a_4095_step_trace_opens_scrubs_and_zooms(page, live_server, uploaded, screenshot):
    ntm = uploaded["ntm"]
    slots = ntm["config"]["memory_slots"]
    page.goto(f"{live_server}/dashboard/explore?checkpoint={ntm['id']}&length=2047&seed=1")
    wait_for_heatmap(page, "explore-read", timeout=120_000)
    # 4095 steps in 512 columns of 8, placed at their timesteps
    rows, cols = on_graph(page, "explore-read", "[gd._fullData[0].z.length, gd._fullData[0].z[0].length]")
    assert (rows, cols) == (slots, 512)
    assert on_graph(page, "explore-read", "gd._fullLayout.xaxis.range") == [-0.5, T - 0.5]
    assert on_graph(page, "explore-read", "gd._fullData[0].x[1]") == 11.5
    page.wait_for_function(f"{text_of('#explore-t-label')} === 't = 0 / {T - 1}'")
    assert "4095 steps drawn as 512 columns of 8" in page.locator("#explore-status").inner_text()

    # the scrubber reaches every step; the per-step panels show the bin that holds it
    page.locator("#explore-t [role=slider]").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("((document.querySelector('#explore-weights-t .gtitle') || {}).textContent || '')"
                           ".startsWith('t = 3 (max of steps 0-7)')")
    page.keyboard.press("End")
    page.wait_for_function(f"{text_of('#explore-t-label')} === 't = {T - 1} / {T - 1}'")
    assert graph_title(page, "explore-weights-t").startswith(f"t = {T - 1} (max of steps 4088-4094)")
    page.wait_for_function("((document.querySelector('#explore-matrix-t .gtitle') || {}).textContent || '')"
                           f".startsWith('t = {T - 1} ')", timeout=120_000)
    assert page.errors == []
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "explore-t4095")

    # zoom into steps 1000-1100: that window comes back at full resolution, the slider within it
    page.evaluate("() => Plotly.relayout(document.querySelector('#explore-read .js-plotly-plot'),"
                  " {'xaxis.range': [1000, 1100]})")
    page.wait_for_function("() => { const gd = document.querySelector('#explore-read .js-plotly-plot');"
                           " return gd && gd._fullData[0] && gd._fullData[0].z[0].length === 101; }", timeout=120_000)
    assert on_graph(page, "explore-read", "gd._fullData[0].x[0]") == 1000
    page.wait_for_function(f"{text_of('#explore-t-label')} === 't = 1000 / {T - 1}'")
    page.locator("#explore-t [role=slider]").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("((document.querySelector('#explore-weights-t .gtitle') || {}).textContent || '')"
                           ".startsWith('t = 1001 ·')")
    assert "steps 1000-1100" in page.locator("#explore-status").inner_text()
    assert page.errors == []
