"""How fast the Explore page is, measured in headless Chromium against a real server.

    python bench/dashboard.py [--runs 7] [--moves 20] [--checkpoint FILE]

Starts `mnemoscope serve` on a free port with a temporary data directory, uploads the
demo NTM (the zoo's copy NTM, else the pytorch-ntm copy checkpoint, else a fresh NTM of
that size: 128 slots x 20, controller 100), traces copy of length 20 (T = 41), and
measures:

  first heatmap: from navigation start (a fresh page load of /dashboard/explore?checkpoint=..)
      to the first animation frame after the read-weight heatmap is drawn; the first load
      (cold browser cache) is printed apart from the median of the warm ones;
  slider move: from the key press that moves the timestep slider to the first animation
      frame after every selected-timestep panel shows the new timestep (weights at t,
      memory at t, the cursor over the read heatmap).

Goals on this machine: first heatmap under 2 s, slider move under 150 ms (medians).

    python bench/dashboard.py --long [--runs 4] [--moves 20]

measures long sequences instead (issue 14): T = 4096 on two untrained models saved into
the temporary store, the page asking for traces max-pooled to the figures' width:

  linear: a linear-memory stack (two layers of linear attention, one head of 128 keys x
      128 values, d_model 128) on MQAR with seq_len 4096; its first heatmap is the
      implicit-attention figure. Goal: first heatmap < 1.5 s.
  ntm: the demo-sized NTM (128 slots x 20, controller 100) on copy of length 2047
      (T = 4095, copy's T is odd); first heatmap: the read weights. Its forward alone
      takes seconds at that length; goal: first heatmap within that forward + 1 s on the
      cold load (the forward runs), and the warm loads come from the sandbox's cached
      forward (said so in the table).
  Both: slider move < 100 ms.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CHROMIUM = os.environ.get("MNEMOSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Installed before any page script: reports when the read heatmap (GRAPH) is first drawn.
FIRST_HEATMAP_JS = """
(() => {
  window.__msFirstHeatmap = null;
  const check = () => {
    const gd = document.querySelector('#GRAPH .js-plotly-plot');
    if (gd && gd._fullData && gd._fullData.some(t => t.type === 'heatmap') && gd.querySelector('.hm image, .hm')) {
      requestAnimationFrame(() => { window.__msFirstHeatmap = performance.now(); });
      return;
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})();
"""

# Arms a watcher: window.__msMove becomes the ms from the next key press to the frame
# after every per-step panel in `panels` shows timestep `target` and the cursor over
# `cursor` (a whole-sequence graph) is there.
SLIDER_MOVE_JS = """
([target, panels, cursor]) => {
  window.__msMove = null;
  let t0 = null;
  const onKey = (e) => { if (t0 === null) { t0 = e.timeStamp; } };
  document.addEventListener('keydown', onKey, true);
  const title = (id) => {
    const el = document.querySelector('#' + id + ' .gtitle');
    return el ? el.textContent : '';
  };
  const cursorAt = (id) => {
    const holder = document.getElementById(id);
    const line = holder && holder.querySelector('.ms-cursor');
    return holder && holder.getAttribute('data-t') === String(target) && line && line.style.display === 'block';
  };
  const done = () => panels.every((id) => title(id).includes('t = ' + target + ' ')) && cursorAt(cursor);
  const poll = () => {
    if (t0 !== null && done()) {
      requestAnimationFrame(() => {
        document.removeEventListener('keydown', onKey, true);
        window.__msMove = performance.now() - t0;
      });
      return;
    }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_checkpoint(folder: Path) -> Path:
    """The demo NTM, as bench/api_load.py picks it: the zoo's copy NTM when the zoo is
    installed, else the pytorch-ntm copy checkpoint (128 slots x 20, imported on upload),
    else a freshly initialised NTM of the same size (the timings depend on the sizes)."""
    root = Path(__file__).resolve().parent.parent
    zoo = root / "mnemoscope" / "zoo"
    found = sorted(p for p in zoo.glob("*.safetensors") if "ntm" in p.name and "copy" in p.name) if zoo.is_dir() else []
    if found:
        return found[0]
    shared = Path(os.environ.get("MNEMOSCOPE_SHARED", root.parent / "shared"))
    pytorch_ntm = shared / "external" / "pytorch-ntm" / "copy-task-1-batch-40000.model"
    if pytorch_ntm.exists():
        return pytorch_ntm
    import torch

    from mnemoscope.models import build_model
    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.tasks import make_task

    torch.manual_seed(0)
    task = make_task({"name": "copy", "params": {"bits": 8, "min_length": 1, "max_length": 20}})
    model = build_model("ntm", {"input_size": 9, "output_size": 8, "controller_size": 100,
                                "memory_slots": 128, "memory_width": 20})
    return save_checkpoint(folder / "demo-ntm.safetensors", model, task=task, step=0, name="demo-ntm")


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, MNEMOSCOPE_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mnemoscope.cli", "serve", "--port", str(port),
                             "--data-dir", str(data_dir), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not answer /api/health within 60 s")


def long_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """The two T = 4096 cases: untrained models saved as checkpoints (timing is what
    matters), each with the page's query string."""
    import torch

    from mnemoscope.models import build_model
    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.tasks import make_task

    torch.manual_seed(0)
    mqar = make_task({"name": "mqar", "params": {"vocab_size": 64, "seq_len": 4096, "num_pairs": 8}})
    linear = build_model("sequence", {"vocab_size": 64, "output_size": 64, "d_model": 128, "heads": 1, "d_key": 128,
                                      "d_value": 128, "conv_size": 4, "chunk_size": 64, "rule": "linear",
                                      "blocks": ["memory", "mlp", "memory", "mlp"]})
    copy = make_task({"name": "copy", "params": {"bits": 8, "min_length": 2047, "max_length": 2047}})
    ntm = build_model("ntm", {"input_size": 9, "output_size": 8, "controller_size": 100, "memory_slots": 128,
                              "memory_width": 20})
    for name, model, task in (("linear", linear, mqar), ("ntm", ntm, copy)):
        FORWARD_S[name] = forward_seconds(model, task)
    return {
        "linear": (save_checkpoint(folder / "linear-4096.safetensors", linear, task=mqar, step=0, name="linear-4096"),
                   "seed=0"),
        "ntm": (save_checkpoint(folder / "ntm-4095.safetensors", ntm, task=copy, step=0, name="ntm-4095"), "seed=0"),
    }


FORWARD_S: dict[str, float] = {}  # each long case's forward alone (one sequence, one thread, as a sandbox runs it)


def forward_seconds(model, task) -> float:
    import torch

    from mnemoscope.analysis.trace import run_trace

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batch = task.sample(1, 0)
        t0 = time.perf_counter()
        run_trace(model, task, batch)
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


# what each case waits for: the first heatmap's graph, the per-step panels and the cursor's graph
CASES = {
    "demo": ("explore-read", ["explore-weights-t", "explore-matrix-t"], "explore-read"),
    "ntm": ("explore-read", ["explore-weights-t", "explore-matrix-t"], "explore-read"),
    "linear": ("explore-attention", ["explore-attention-t", "explore-matrix-t"], "explore-strips"),
}


def upload(base: str, ckpt: Path) -> dict:
    with open(ckpt, "rb") as f:
        r = httpx.post(f"{base}/api/checkpoints", files={"file": (ckpt.name, f)}, timeout=120)
    r.raise_for_status()
    return r.json()


def measure(browser, url: str, case: str, runs: int, moves_n: int) -> tuple[list[float], list[float], int]:
    """(first-heatmap times of `runs` page loads, slider-move times, T) on one Explore URL."""
    graph, panels, cursor = CASES[case]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(FIRST_HEATMAP_JS.replace("GRAPH", graph))
    loads = []
    for _ in range(runs):
        page.goto(url)
        page.wait_for_function("window.__msFirstHeatmap !== null", timeout=120_000)
        loads.append(page.evaluate("window.__msFirstHeatmap"))
        print(f"  {case}: first heatmap {loads[-1]:.0f} ms", file=sys.stderr, flush=True)
        # the page's second request (the memory matrix) ends before the next load starts
        page.wait_for_function("((document.querySelector('#explore-matrix-t .gtitle') || {}).textContent || '')"
                               ".startsWith('t = ')", timeout=120_000)
    T = int(page.evaluate("document.querySelector('#explore-t input[type=number]').max") or 0) + 1
    thumb = page.locator("#explore-t [role=slider]")
    thumb.focus()
    moves = []
    for i in range(moves_n):
        target = (i + 1) % T
        key = "ArrowRight" if target else "Home"
        page.evaluate(SLIDER_MOVE_JS, [target, panels, cursor])
        page.keyboard.press(key)
        page.wait_for_function("window.__msMove !== null", timeout=10_000)
        moves.append(page.evaluate("window.__msMove"))
        print(f"  {case}: slider move to {target}: {moves[-1]:.0f} ms", file=sys.stderr, flush=True)
    page.close()
    return loads, moves, T


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="page loads to time (the first is cold)")
    parser.add_argument("--moves", type=int, default=20, help="slider moves to time")
    parser.add_argument("--length", type=int, default=20, help="copy length of the traced sample")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to use instead of the demo NTM")
    parser.add_argument("--long", action="store_true", help="the T = 4096 cases (linear-memory stack, NTM) instead")
    parser.add_argument("--screenshot", type=Path, default=None, help="--long: save the NTM's Explore page here")
    parser.add_argument("--only", choices=["linear", "ntm"], default=None, help="--long: one of the two cases")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    results = {}
    with tempfile.TemporaryDirectory(prefix="mnemoscope-bench-") as tmp:
        tmp = Path(tmp)
        port = free_port()
        server = start_server(tmp / "data", port)
        try:
            base = f"http://127.0.0.1:{port}"
            if args.long:
                cases = {name: (path, query) for name, (path, query) in long_checkpoints(tmp).items()
                         if args.only in (None, name)}
            else:
                cases = {"demo": (args.checkpoint or demo_checkpoint(tmp), f"length={args.length}&seed=0")}
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for case, (ckpt, query) in cases.items():
                    info = upload(base, ckpt)
                    url = f"{base}/dashboard/explore?checkpoint={info['id']}&{query}"
                    print(f"{case}: {info['name']} ({info['arch']}, {info['parameters']:,} parameters, "
                          f"{info['config'].get('memory_slots') or info['config'].get('d_key')} slots/keys); page: {url}")
                    results[case] = measure(browser, url, case, args.runs, args.moves)
                    if args.screenshot and case == "ntm":
                        shot = browser.new_page(viewport={"width": 1280, "height": 1400})
                        shot.goto(url + "&t=1500")
                        shot.wait_for_function("((document.querySelector('#explore-matrix-t .gtitle') || {})"
                                               ".textContent || '').startsWith('t = 1500 ')", timeout=120_000)
                        shot.screenshot(path=str(args.screenshot), full_page=True)
                        shot.close()
                browser.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()

    if not args.long:
        loads, moves, _ = results["demo"]
        warm = loads[1:] or loads
        print(f"first heatmap on Explore: cold {loads[0]:.0f} ms; median of {len(warm)} warm loads "
              f"{statistics.median(warm):.0f} ms (min {min(warm):.0f}, max {max(warm):.0f}); goal < 2000 ms")
        print(f"slider move to updated panels: median of {len(moves)} {statistics.median(moves):.1f} ms "
              f"(min {min(moves):.1f}, max {max(moves):.1f}); goal < 150 ms")
        return 0
    goals = {"ntm": f"< {1000 * FORWARD_S['ntm'] + 1000:.0f} ms (forward {1000 * FORWARD_S['ntm']:.0f} ms + 1 s)",
             "linear": f"< 1500 ms (forward {1000 * FORWARD_S['linear']:.0f} ms)"}
    print("first heatmap: cold = the page's first load (the forward runs); warm = later loads (the NTM's from the "
          "sandbox's cached forward; the linear stack's T x T attention is over the cache's budget, its forward runs)")
    print(f"{'case':8} {'T':>5} {'first heatmap cold':>19} {'warm median':>12}  {'goal':44} {'slider median':>14}  goal")
    for case, (loads, moves, T) in results.items():
        warm = loads[1:] or loads
        print(f"{case:8} {T:5d} {loads[0]:16.0f} ms {statistics.median(warm):9.0f} ms  {goals[case]:44} "
              f"{statistics.median(moves):11.1f} ms  < 100 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
