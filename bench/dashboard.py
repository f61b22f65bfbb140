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

# Installed before any page script: reports when the read heatmap is first drawn.
FIRST_HEATMAP_JS = """
(() => {
  window.__msFirstHeatmap = null;
  const check = () => {
    const gd = document.querySelector('#explore-read .js-plotly-plot');
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
# after every per-step panel shows timestep `target`.
SLIDER_MOVE_JS = """
(target) => {
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
  const done = () => title('explore-weights-t').startsWith('t = ' + target + ' ')
    && title('explore-matrix-t').startsWith('t = ' + target + ' ') && cursorAt('explore-read');
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="page loads to time (the first is cold)")
    parser.add_argument("--moves", type=int, default=20, help="slider moves to time")
    parser.add_argument("--length", type=int, default=20, help="copy length of the traced sample")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to use instead of the demo NTM")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mnemoscope-bench-") as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint or demo_checkpoint(tmp)
        port = free_port()
        server = start_server(tmp / "data", port)
        try:
            base = f"http://127.0.0.1:{port}"
            with open(ckpt, "rb") as f:
                r = httpx.post(f"{base}/api/checkpoints", files={"file": (ckpt.name, f)}, timeout=120)
            r.raise_for_status()
            info = r.json()
            url = f"{base}/dashboard/explore?checkpoint={info['id']}&length={args.length}&seed=0"
            print(f"checkpoint: {info['name']} ({info['arch']}, {info['parameters']:,} parameters, "
                  f"{info['config'].get('memory_slots')} slots); page: {url}")

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script(FIRST_HEATMAP_JS)
                loads = []
                for _ in range(args.runs):
                    page.goto(url)
                    page.wait_for_function("window.__msFirstHeatmap !== null", timeout=30_000)
                    loads.append(page.evaluate("window.__msFirstHeatmap"))
                T = page.evaluate("document.querySelector('#explore-t input[type=number]').max")
                T = int(T) + 1 if T else args.length * 2 + 1
                thumb = page.locator("#explore-t [role=slider]")
                thumb.focus()
                moves = []
                for i in range(args.moves):
                    target = (i + 1) % T
                    key = "ArrowRight" if target else "Home"
                    page.evaluate(SLIDER_MOVE_JS, target)
                    page.keyboard.press(key)
                    page.wait_for_function("window.__msMove !== null", timeout=10_000)
                    moves.append(page.evaluate("window.__msMove"))
                browser.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()

    warm = loads[1:] or loads
    print(f"first heatmap on Explore: cold {loads[0]:.0f} ms; median of {len(warm)} warm loads "
          f"{statistics.median(warm):.0f} ms (min {min(warm):.0f}, max {max(warm):.0f}); goal < 2000 ms")
    print(f"slider move to updated panels: median of {len(moves)} {statistics.median(moves):.1f} ms "
          f"(min {min(moves):.1f}, max {max(moves):.1f}); goal < 150 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
