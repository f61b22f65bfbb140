"""Benchmark: the REST API under load, against a real `mnemoscope serve` subprocess.

  1. `POST /api/checkpoints/{id}/trace` on the demo NTM (the zoo's copy NTM when the zoo is
     installed, else the pytorch-ntm copy checkpoint from ../shared, else a fresh NTM of the
     demo size: controller 100, memory 128 x 20), copy task at its longest (L = 20, T = 41),
     every site recorded: p50/p99 latency and throughput with 1 and with 16 concurrent
     clients (httpx, one thread and connection each).
  2. `GET /api/health` p50/p99/max while 2 heavy patching jobs (every slot of every memory
     site at every timestep) keep both worker processes busy. Goal: p99 < 50 ms.
  3. The hostile mix: the heaviest traces and jobs the server's budget allows (GET /api/kinds
     states it; server/budget.py prices them), from several clients at once, plus a client
     sending the requests of "A server that no request can take down" (each must be a 4xx
     within a second), while /api/health is measured: its p50/p99 and the peak summed RSS of
     the server and all its processes. Goals: p99 < 50 ms, peak < 3 GB.

    python bench/api_load.py [--requests 40] [--clients 1 16] [--health 400] [--workers 2] [--hostile-s 30]
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
from typing import Callable

import httpx

from mnemoscope.models.tasks import make_task
from mnemoscope.server import budget
from mnemoscope.server.kinds import KINDS
from mnemoscope.server.limits import tree_rss_bytes

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


# -- the hostile mix ------------------------------------------------------------------------------

HOSTILE_TRACES = [  # the findings, against the demo NTM (copy, 8 bits: repeat_copy with 7 fits it)
    {"task": {"name": "repeat_copy", "params": {"bits": 7, "min_length": 220, "max_length": 220,
                                                 "min_repeats": 220, "max_repeats": 220}}, "samples": 16},
    {"task": {"params": {"min_length": 4096, "max_length": 4096}}, "samples": 16, "sites": ["*"]},
]


def largest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest n in [low, high] with fits(n), for fits true up to some n and false after."""
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def within(cost: budget.Cost, limits: dict, table) -> bool:
    values = cost.as_dict()
    return all(values[limit.quantity] <= limits[limit.setting] for limit in table)


def heaviest_requests(c: httpx.Client, ck: dict) -> tuple[dict, dict]:
    """The heaviest trace (most samples, every site, longest copy) and patching job (every
    slot of every memory site, 16 pairs, longest copy) that this server's budget allows."""
    kinds = {e["name"]: e for e in c.get("/api/kinds").json()}
    trace_limits, job_limits = kinds["trace"]["budget"], kinds["patching"]["budget"]
    sites = c.get(f"/api/checkpoints/{ck['id']}/sites").json()
    record = {**ck, "sites": sites}
    names = [s["name"] for s in sites if not s["on_request"]]
    own = ck["task"]

    def task(length: int) -> dict:
        return {"name": own["name"], "params": {**own["params"], "min_length": length, "max_length": length}}

    samples = trace_limits["trace_max_samples"]
    trace_length = largest(lambda n: within(budget.estimate_trace(record, make_task(task(n)), samples, names),
                                            trace_limits, budget.TRACE_LIMITS), 1, trace_limits["max_steps"])
    slot_sites = [s["name"] for s in sites if "slot" in s["axes"] and not s["on_request"]]

    def job(n: int) -> dict:
        return {"task": task(n), "seed": 0, "pairs": 16, "sites": slot_sites, "direction": "denoise",
                "per_element": "slot", "memory_budget_mb": 512}

    job_length = largest(lambda n: within(budget.estimate_job(KINDS["patching"], record, job(n))[0], job_limits,
                                          budget.JOB_LIMITS), 1, job_limits["max_steps"])
    trace_body = {"task": {"params": task(trace_length)["params"]}, "samples": samples, "sites": ["*"]}
    job_body = {"task": {"params": task(job_length)["params"]}, "pairs": 16, "sites": slot_sites,
                "per_element": "slot"}
    return trace_body, job_body


def hostile_mix(url: str, ck: dict, headers: dict, seconds: float, trace_clients: int, pid: int | None) -> dict:
    with httpx.Client(base_url=url, timeout=120, headers=headers) as c:
        trace_body, job_body = heaviest_requests(c, ck)
        jobs = []
        for seed in (11, 12):  # one heaviest job per worker
            r = c.post(f"/api/checkpoints/{ck['id']}/patching", json={**job_body, "seed": seed})
            r.raise_for_status()
            jobs.append(r.json()["id"])
    stop = threading.Event()
    lock = threading.Lock()
    health: list[float] = []
    traces: list[float] = []
    errors: list[str] = []
    hostile: list[tuple[int, float]] = []
    peak = [0]

    def trace_client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as c:
            k = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post(f"/api/checkpoints/{ck['id']}/trace", json={**trace_body, "seed": 1000 * i + k})
                with lock:
                    (traces.append(time.perf_counter() - t0) if r.status_code == 200
                     else errors.append(f"trace {r.status_code} {r.text[:100]}"))
                k += 1

    def hostile_client() -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as c:
            while not stop.is_set():
                for body in HOSTILE_TRACES:
                    t0 = time.perf_counter()
                    r = c.post(f"/api/checkpoints/{ck['id']}/trace", json=body)
                    with lock:
                        hostile.append((r.status_code, time.perf_counter() - t0))
                stop.wait(0.2)

    def health_client() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.get("/api/health").raise_for_status()
                health.append(time.perf_counter() - t0)
                stop.wait(0.01)

    def rss_sampler() -> None:
        while pid is not None and not stop.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(pid))
            stop.wait(0.05)

    threads = [threading.Thread(target=trace_client, args=(i,)) for i in range(trace_clients)]
    threads += [threading.Thread(target=f) for f in (hostile_client, health_client, rss_sampler)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    with httpx.Client(base_url=url, timeout=60, headers=headers) as c:
        running = sum(c.get(f"/api/jobs/{j}").json()["status"] == "running" for j in jobs)
        for j in jobs:
            c.delete(f"/api/jobs/{j}")
    return {"seconds": seconds, "trace_body": trace_body, "job_body": job_body, "trace_clients": trace_clients,
            "traces": len(traces), "trace_p50_ms": 1000 * percentile(traces, 50), "trace_errors": errors[:5],
            "jobs_running_at_end": running,
            "hostile": len(hostile), "hostile_refused_in_1s": sum(400 <= s < 500 and dt < 1.0 for s, dt in hostile),
            "health_requests": len(health), "health_p50_ms": 1000 * percentile(health, 50),
            "health_p99_ms": 1000 * percentile(health, 99), "health_max_ms": 1000 * max(health),
            "peak_rss_mb": peak[0] / 2**20 if pid is not None else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="benchmark this running server instead of starting one")
    ap.add_argument("--token", default=os.environ.get("MNEMOSCOPE_TOKEN"))
    ap.add_argument("--requests", type=int, default=40, help="trace requests per client count (split over clients)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--health", type=int, default=400, help="health requests while the jobs run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hostile-s", type=float, default=30.0, help="length of the hostile mix (0 skips it)")
    ap.add_argument("--hostile-clients", type=int, default=3, help="clients sending the heaviest allowed traces")
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
            if args.hostile_s > 0:
                results["hostile_mix"] = hostile_mix(url, ck, headers, args.hostile_s, args.hostile_clients,
                                                     proc.pid if proc is not None else None)
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
    ok = h["p99_ms"] < 50 and all(r["errors"] == 0 for r in results["trace"])
    m = results.get("hostile_mix")
    if m is not None:
        copy = m["trace_body"]["task"]["params"]["max_length"]
        job_copy = m["job_body"]["task"]["params"]["max_length"]
        peak = "n/a (not our server)" if m["peak_rss_mb"] is None else f"{m['peak_rss_mb']:.0f} MB"
        mix_ok = (m["health_p99_ms"] < 50 and (m["peak_rss_mb"] or 0) < 3 * 1024
                  and m["hostile_refused_in_1s"] == m["hostile"] and not m["trace_errors"])
        print(f"hostile mix, {m['seconds']:g} s: {m['trace_clients']} clients tracing the heaviest allowed trace "
              f"(copy L={copy}, {m['trace_body']['samples']} samples, all sites; {m['traces']} answered, p50 "
              f"{m['trace_p50_ms']:.0f} ms), 2 heaviest allowed patching jobs (copy L={job_copy}, every slot; "
              f"{m['jobs_running_at_end']}/2 still running at the end), {m['hostile_refused_in_1s']}/{m['hostile']} "
              f"hostile traces refused within 1 s")
        print(f"/api/health during the hostile mix: p50 {m['health_p50_ms']:.1f} ms, p99 {m['health_p99_ms']:.1f} ms, "
              f"max {m['health_max_ms']:.1f} ms over {m['health_requests']} requests; peak RSS of the server and "
              f"its processes {peak} ({'OK' if mix_ok else 'OVER GOAL'}: goals p99 < 50 ms, peak < 3 GB)")
        if m["trace_errors"]:
            print("trace errors:", *m["trace_errors"], sep="\n  ")
        ok = ok and mix_ok
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
