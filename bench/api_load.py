"""Benchmark: the REST API under load, against a real `mnemoscope serve` subprocess.

  1. `POST /api/checkpoints/{id}/trace` on the demo NTM (the zoo's copy NTM when the zoo is
     installed, else the pytorch-ntm copy checkpoint from ../shared, else a fresh NTM of the
     demo size: controller 100, memory 128 x 20), copy task at its longest (L = 20, T = 41),
     every site recorded: p50/p99 latency and throughput with 1 and with 16 concurrent
     clients (httpx, one thread and connection each).
  2. `GET /api/health` p50/p99/max while 2 heavy patching jobs (every slot of every memory
     site at every timestep) keep both worker processes busy. Goal: p99 < 50 ms.

    python bench/api_load.py [--requests 40] [--clients 1 16] [--health 400] [--workers 2]
    python bench/api_load.py --url http://127.0.0.1:8000   # an already running server

Prints a table; `--json PATH` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MNEMOSCOPE_SHARED", REPO.parent / "shared"))
PYTORCH_NTM = SHARED / "external" / "pytorch-ntm" / "copy-task-1-batch-40000.model"
TRACE_BODY = {"task": {"params": {"min_length": 20, "max_length": 20}}, "samples": 1, "sites": ["*"]}


def demo_ntm(tmp: Path) -> tuple[str, bytes, str]:
    """(label, file bytes, file name) of the demo NTM."""
    zoo = REPO / "mnemoscope" / "zoo"
    found = sorted(p for p in zoo.glob("*.safetensors") if "ntm" in p.name and "copy" in p.name) if zoo.is_dir() else []
    if found:
        return f"zoo {found[0].name}", found[0].read_bytes(), found[0].name
    if PYTORCH_NTM.exists():
        return "pytorch-ntm copy checkpoint (imported on upload)", PYTORCH_NTM.read_bytes(), PYTORCH_NTM.name
    import torch

    from mnemoscope.models import build_model
    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.tasks import make_task

    torch.manual_seed(0)
    model = build_model("ntm", dict(input_size=9, output_size=8, controller_size=100, memory_slots=128, memory_width=20))
    path = save_checkpoint(tmp / "ntm.safetensors", model, task=make_task("copy").spec(), name="ntm-demo-size")
    return "fresh NTM of the demo size", path.read_bytes(), path.name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, workers: int, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MNEMOSCOPE_DASHBOARD": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemoscope.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--workers", str(workers), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not become ready")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def trace_load(url: str, checkpoint_id: str, clients: int, per_client: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            c.get("/api/health")  # open the connection before the clock starts
            barrier.wait()
            for k in range(per_client):
                t0 = time.perf_counter()
                r = c.post(f"/api/checkpoints/{checkpoint_id}/trace", json={**TRACE_BODY, "seed": i * 1000 + k})
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt) if r.status_code == 200 else errors.append(f"{r.status_code} {r.text[:100]}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(latencies), "errors": len(errors),
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
            "throughput_rps": len(latencies) / wall}


def health_under_jobs(url: str, checkpoint_id: str, n: int, token_headers: dict) -> dict:
    with httpx.Client(base_url=url, timeout=60, headers=token_headers) as c:
        sites = [s["name"] for s in c.get(f"/api/checkpoints/{checkpoint_id}/sites").json()
                 if "slot" in s["axes"] and not s["on_request"]]
        jobs = []
        for seed in (1, 2):  # two different requests, so neither reuses the other
            body = {"pairs": 16, "seed": seed, "sites": sites, "per_element": "slot",
                    "task": {"params": {"min_length": 20, "max_length": 20}}}
            r = c.post(f"/api/checkpoints/{checkpoint_id}/patching", json=body)
            r.raise_for_status()
            jobs.append(r.json()["id"])
        deadline = time.monotonic() + 120
        while not all(c.get(f"/api/jobs/{j}").json()["status"] == "running" for j in jobs):
            if time.monotonic() > deadline:
                raise SystemExit("the patching jobs never started")
            time.sleep(0.1)
        latencies = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get("/api/health")
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            time.sleep(0.01)
        states = [c.get(f"/api/jobs/{j}").json() for j in jobs]
        still_running = sum(s["status"] == "running" for s in states)
        progress = [round(s["progress"], 3) for s in states]
        for j in jobs:
            c.delete(f"/api/jobs/{j}")
    return {"requests": n, "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
            "max_ms": 1000 * max(latencies), "jobs_running_at_end": still_running, "job_progress": progress}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="benchmark this running server instead of starting one")
    ap.add_argument("--token", default=os.environ.get("MNEMOSCOPE_TOKEN"))
    ap.add_argument("--requests", type=int, default=40, help="trace requests per client count (split over clients)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--health", type=int, default=400, help="health requests while the jobs run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        label, data, filename = demo_ntm(tmp)
        proc = None
        log = open(tmp / "server.log", "wb")
        try:
            if args.url:
                url = args.url.rstrip("/")
            else:
                proc, url = start_server(tmp / "data", args.workers, log)
            with httpx.Client(base_url=url, timeout=120, headers=headers) as c:
                r = c.post("/api/checkpoints", files={"file": (filename, data)})
                if r.status_code not in (200, 201):
                    raise SystemExit(f"upload failed: {r.status_code} {r.text}")
                ck = r.json()
                for _ in range(3):  # load the model replicas, warm the allocator
                    c.post(f"/api/checkpoints/{ck['id']}/trace", json=TRACE_BODY).raise_for_status()
                payload = len(c.post(f"/api/checkpoints/{ck['id']}/trace", json=TRACE_BODY).content)

            results = {"model": label, "arch": ck["arch"], "parameters": ck["parameters"],
                       "trace_body": TRACE_BODY, "trace_response_bytes": payload, "trace": []}
            for n in args.clients:
                results["trace"].append(trace_load(url, ck["id"], n, max(1, args.requests // n) if n > 1 else args.requests))
            results["health_during_patching"] = health_under_jobs(url, ck["id"], args.health, headers)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
            log.close()

    print(f"demo model: {results['model']} ({results['arch']}, {results['parameters']} parameters); "
          f"trace of copy L=20 (T=41), all sites, {results['trace_response_bytes'] / 1024:.0f} KiB per response")
    print(f"{'clients':>8} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}")
    for row in results["trace"]:
        print(f"{row['clients']:>8} {row['requests']:>9} {row['errors']:>7} {row['p50_ms']:>8.1f} "
              f"{row['p99_ms']:>8.1f} {row['throughput_rps']:>7.1f}")
    h = results["health_during_patching"]
    verdict = "OK" if h["p99_ms"] < 50 else "OVER GOAL"
    print(f"/api/health during 2 patching jobs: p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, "
          f"max {h['max_ms']:.1f} ms over {h['requests']} requests ({verdict}: goal p99 < 50 ms; "
          f"jobs still running at the end: {h['jobs_running_at_end']}/2)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if h["p99_ms"] < 50 and all(r["errors"] == 0 for r in results["trace"]) else 1


if __name__ == "__main__":
    sys.exit(main())
