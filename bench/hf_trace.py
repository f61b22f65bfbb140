"""Benchmark: a trace of a 4-layer tiny Hugging Face hybrid at T=256, every site recorded, through what
the server's sandbox worker runs for POST /trace (server/services/isolated.py `trace`, which calls
server/services/trace.py `trace`: the checkpoint registered in a store as an upload is, the model from
the worker's model cache, the task sampled, the engine's trace, per-step loss, metric and entropies,
the JSON bytes of the answer), warm, median of --repeats runs, against the 1 s goal. Only the hop
between the API process and the worker (bytes through a pipe) is left out.

The models are the zoo's trained hybrids (models/hf_configs/*: Qwen3-Next-style Gated DeltaNet +
attention, Bamba-style Mamba-2 + attention) when mnemoscope/zoo holds them, else freshly initialised
models of the same configs (the cost does not depend on the weights).

    python bench/hf_trace.py [--repeats 5] [--seq-len 256] [--samples 1] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mnemoscope.models.checkpoints import save_checkpoint
from mnemoscope.models.hf import HFConfig, HFModel, bundled_hf_config
from mnemoscope.models.zoo import default_zoo_dir

GOAL_S = 1.0
CASES = {"qwen3_next_tiny": "hf-qwen3-next-mqar", "bamba_tiny": "hf-bamba-mqar"}  # config -> zoo checkpoint
MQAR = {"vocab_size": 64, "num_pairs": 8}


def checkpoint_for(config_name: str, zoo_name: str, folder: Path) -> tuple[Path, str]:
    committed = default_zoo_dir() / f"{zoo_name}.safetensors"
    if committed.exists():
        return committed, f"zoo {zoo_name}"
    torch.manual_seed(0)
    model = HFModel(HFConfig(bundled_hf_config(config_name))).eval()
    path = folder / f"{config_name}.safetensors"
    save_checkpoint(path, model, task={"name": "mqar", "params": {**MQAR, "seq_len": 64}}, name=config_name)
    return path, f"fresh {config_name}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--samples", type=int, default=1, help="sequences per trace (the dashboard asks for 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads; default the server's worker_threads (what a trace's sandbox runs with)")
    args = p.parse_args(argv)
    from mnemoscope.server.settings import Settings

    # the server runs traces in sandbox workers with `worker_threads` torch threads (server/limits.py);
    # torch's own default (every core) on a shared, loaded machine is 10-60x slower at this size
    torch.set_num_threads(args.threads or Settings().worker_threads)

    from mnemoscope.cli.commands.demo import register_file
    from mnemoscope.server.services.isolated import trace as sandbox_trace
    from mnemoscope.server.store import Store

    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="hf-trace-bench-") as tmp:
        store = Store(Path(tmp) / "store")
        try:
            for config_name, zoo_name in CASES.items():
                path, label = checkpoint_for(config_name, zoo_name, Path(tmp))
                record, _ = register_file(store, path)
                sites = [s["name"] for s in record["sites"]]

                def once() -> tuple[float, float, int]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    body = sandbox_trace(record, str(store.checkpoint_path(record)), 1, task_name="mqar",
                                         task_params={**MQAR, "seq_len": args.seq_len}, seed=0,
                                         samples=args.samples, sites=sites, max_task_param=4096)
                    return time.perf_counter() - t0, time.process_time() - c0, len(body)

                once()  # warm: the model loaded into the cache, first-call allocations
                times, cpu, size = [], [], 0
                for _ in range(args.repeats):
                    dt, dc, size = once()
                    times.append(dt)
                    cpu.append(dc)
                median = statistics.median(times)
                worst = max(worst, median)
                print(f"{label}: trace of {len(sites)} sites, T={args.seq_len}, {args.samples} sequence(s): "
                      f"median {1000 * median:.0f} ms of {args.repeats} warm runs "
                      f"(min {1000 * min(times):.0f}, max {1000 * max(times):.0f}; CPU time {1000 * statistics.median(cpu):.0f} ms; "
                      f"answer {size / 1e6:.1f} MB) "
                      f"-- goal < {1000 * GOAL_S:.0f} ms: {'met' if median < GOAL_S else 'MISSED'}")
        finally:
            store.close()
    # wall time counts the waits for a core on a shared machine; CPU time is what the trace itself costs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0 if worst < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
