"""Benchmark: the full per-timestep activation-patching sweep, batched vs naive.

Every memory-path site x every timestep, denoising, on
  1. an NTM on copy of length 20 (T = 41): the real pytorch-ntm checkpoint from
     ../shared/external/pytorch-ntm when it is there, else a freshly initialised NTM of
     the same size (controller 100, memory 128 x 20);
  2. a linear-memory `sequence` model (two DeltaNet memory blocks with MLPs, d_model 64)
     on MQAR at sequence length 64, freshly initialised.
Each case times `patch_sweep` (all variants as rows of one batched forward pass per
memory-budget chunk) against `patch_sweep_naive` (one forward pass per patch, as
TransformerLens's generic patching does), median of --repeats runs each, and prints
both times, their ratio and the max abs difference of the two result matrices.

The third case, `prefix`, is prefix reuse on the NTM (copy L=20, --prefix-pairs pairs, 8 by
default): `patch_sweep` resuming every patch at t from the base run's state there (the
default for models with the resume API) against today's batched sweep (`prefix_reuse=False`),
side by side with their ratio, and each sweep's cost in single forwards: its time over that
of one plain forward pass of all the rows the batched sweep runs (every variant it runs x
the pairs, up to the last scored step), i.e. what the sweep costs beyond running its rows.

    python bench/patching.py [--repeats 3] [--pairs 1] [--threads 1] [--only ntm|sequence|prefix]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from mnemoscope.analysis.patching import patch_sweep, patch_sweep_naive
from mnemoscope.analysis.runs import forward, tile
from mnemoscope.analysis.sites import memory_sites
from mnemoscope.models.registry import build_model
from mnemoscope.models.tasks import make_task

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MNEMOSCOPE_SHARED", REPO.parent / "shared"))
PYTORCH_NTM = SHARED / "external" / "pytorch-ntm" / "copy-task-1-batch-40000.model"


def ntm_case(pairs: int, seed: int):
    task = make_task("copy", bits=8, min_length=20, max_length=20)
    if PYTORCH_NTM.exists():
        from mnemoscope.models.importers.pytorch_ntm import import_file

        model, _ = import_file(PYTORCH_NTM)
        label = "NTM (pytorch-ntm checkpoint), copy L=20"
    else:
        torch.manual_seed(seed)
        model = build_model("ntm", dict(input_size=9, output_size=8, controller_size=100, memory_slots=128,
                                        memory_width=20))
        label = "NTM (fresh, pytorch-ntm size; fixture not found), copy L=20"
    return label, model, task, task.patch_pairs(pairs, seed)


def sequence_case(pairs: int, seed: int):
    task = make_task("mqar", vocab_size=64, seq_len=64, num_pairs=8)
    torch.manual_seed(seed)
    model = build_model("sequence", dict(vocab_size=64, output_size=64, d_model=64, heads=4, rule="delta",
                                         blocks=["memory", "mlp", "memory", "mlp"]))
    return "linear memory (DeltaNet x2, fresh), MQAR T=64", model, task, task.patch_pairs(pairs, seed)


def timed_pair(fast_fn, slow_fn, repeats: int):
    """Median times of two functions, run alternately so that load from other processes
    on the shared machine falls on both alike."""
    fast_t, slow_t, fast, slow = [], [], None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast = fast_fn()
        t1 = time.perf_counter()
        slow = slow_fn()
        t2 = time.perf_counter()
        fast_t.append(t1 - t0)
        slow_t.append(t2 - t1)
    return statistics.median(fast_t), fast, statistics.median(slow_t), slow


def run_case(label, model, task, pair, repeats: int) -> dict:
    model.eval()
    sites = memory_sites(model)
    T = pair.clean.mask.shape[1]
    t_fast, fast, t_slow, slow = timed_pair(lambda: patch_sweep(model, task, pair, sites),
                                            lambda: patch_sweep_naive(model, task, pair, sites), repeats)
    both = ~torch.isnan(fast.scores) & ~torch.isnan(slow.scores)
    diff = float((fast.scores[both] - slow.scores[both]).abs().max()) if both.any() else float("nan")
    raw = float((fast.patched - slow.patched).abs().max())
    print(f"{label}")
    print(f"  {len(sites)} sites x {T} steps = {len(sites) * T} patches, {fast.pairs} pair(s); "
          f"S_clean {fast.score_clean:.3g}, S_corrupted {fast.score_corrupted:.3g}; "
          f"{fast.skipped} patches skipped by the batched sweep (no-op, or after the last scored step)")
    print(f"  batched {t_fast:.3f} s   naive {t_slow:.3f} s   speed-up {t_slow / t_fast:.1f}x   "
          f"max |diff| recovery {diff:.2e}, raw score {raw:.2e}")
    sys.stdout.flush()
    return {"label": label, "batched_s": t_fast, "naive_s": t_slow, "ratio": t_slow / t_fast, "max_abs_diff": diff}


def run_prefix_case(label, model, task, pair, repeats: int) -> dict:
    """Prefix reuse against today's batched sweep, and both in units of one plain forward pass."""
    model.eval()
    sites = memory_sites(model)
    t_prefix, prefix, t_batched, batched = timed_pair(lambda: patch_sweep(model, task, pair, sites),
                                                      lambda: patch_sweep(model, task, pair, sites,
                                                                          prefix_reuse=False), repeats)
    cells = ~torch.isnan(batched.patched)
    diff = float((prefix.patched[cells] - batched.patched[cells]).abs().max())
    variants = len(sites) * (pair.clean.mask.shape[1] + 1) - batched.skipped  # every step, and all steps at once
    steps = int((pair.differs.bool() & pair.clean.mask.bool()).any(0).nonzero().max()) + 1
    rows = tile(pair.corrupted.inputs[:, :steps], variants)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(model, rows)
        times.append(time.perf_counter() - t0)
    t_forward = statistics.median(times)
    print(f"{label}, {prefix.pairs} pairs: prefix reuse vs today's batched sweep")
    print(f"  {variants} patches run ({batched.skipped} skipped), {variants * prefix.pairs} rows x {steps} steps")
    print(f"  prefix reuse {t_prefix:.3f} s   batched {t_batched:.3f} s   speed-up {t_batched / t_prefix:.2f}x   "
          f"max |diff| raw score {diff:.2e}")
    print(f"  one forward of those rows {t_forward:.3f} s: batched sweep = {t_batched / t_forward:.2f} forwards, "
          f"prefix reuse = {t_prefix / t_forward:.2f} forwards")
    sys.stdout.flush()
    return {"label": label, "prefix_s": t_prefix, "batched_s": t_batched, "ratio": t_batched / t_prefix,
            "forward_s": t_forward, "max_abs_diff": diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pairs", type=int, default=1, help="clean/corrupted pairs per sweep")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix-pairs", type=int, default=8, help="pairs for the prefix-reuse case")
    p.add_argument("--only", choices=["ntm", "sequence", "prefix"], help="run one case")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} run(s)")
    cases = {"ntm": ntm_case, "sequence": sequence_case}
    for name, make in cases.items():
        if args.only and name != args.only:
            continue
        run_case(*make(args.pairs, args.seed), args.repeats)
    if args.only in (None, "prefix"):
        run_prefix_case(*ntm_case(args.prefix_pairs, args.seed), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
