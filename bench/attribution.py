"""Benchmark: attribution patching (AtP, AtP*) against the exact batched sweep, side by side.

For every case, every memory-path site x every timestep (the sweep `bench/patching.py`
times), denoising, on the case's own clean/corrupted pairs:
  - exact: `patch_sweep` (batched, with its exact shortcuts);
  - AtP: `attribution_patch(exact_distributions=False, graddrop=False)`: one source forward,
    one base forward with gradients, one backward;
  - AtP*: `attribution_patch()` (distribution sites computed exactly, GradDrop's check);
and prints the time of each, the speed-up over exact, and the agreement with exact:
Spearman rank correlation of the recovery over all cells and top-10 recall (the share of
the 10 cells with the largest exact effect that are among the estimate's 10 largest). "live"
is the Spearman correlation over the cells exact patching actually ran (its exact shortcuts
score the others as the base run, recovery exactly 0, and the estimate gives them 0 too, so
their ties flatter the correlation over all cells).

Cases:
  a. the NTM copy case of bench/patching.py (pytorch-ntm checkpoint, copy L=20, T=41);
  b. a random 24-layer `sequence` stack (12 DeltaNet memory blocks and 12 MLPs, d_model 256)
     on MQAR at T=512. Its exact sweep would take hours on this CPU, so it is extrapolated:
     a seeded random sample of the cells the sweep would run is computed exactly (time per
     cell x cells), and the agreement is measured on that sample plus the estimate's top
     20 cells (top-10 recall then among those);
  c. every final zoo checkpoint (NTMs, DNC, linear memory, hybrids) on its own task;
  d. tiny random Hugging Face models (Mamba-2, Jamba, Qwen3-Next) from the configs of
     tests/models/test_hf.py, on MQAR (vocabulary 64, T=64).
Medians over the cases of each group are printed at the end.

    python bench/attribution.py [--pairs 4] [--threads 1] [--only ntm stack zoo hf] [--stack-sample 48]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mnemoscope.analysis.attribution import agreement, attribution_patch, exact_cells
from mnemoscope.analysis.patching import _causal_horizon, _is_noop, _setup, patch_sweep
from mnemoscope.analysis.sites import evaluating, memory_sites
from mnemoscope.models.registry import build_model
from mnemoscope.models.tasks import make_task

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MNEMOSCOPE_SHARED", REPO.parent / "shared"))
PYTORCH_NTM = SHARED / "external" / "pytorch-ntm" / "copy-task-1-batch-40000.model"
ZOO = REPO / "mnemoscope" / "zoo"
HF_TYPES = ("mamba2", "jamba", "qwen3_next")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def row(group: str, label: str, cells: int, exact_s: float, atp_s: float, atp, star_s: float, star, exact,
        extrapolated: bool = False) -> dict:
    a, s = agreement(atp.scores, exact.scores, "denoise"), agreement(star.scores, exact.scores, "denoise")
    # the same over the live cells only: those exact patching ran (a skipped cell scores exactly the base run,
    # recovery 0, and so does its estimate, so the ties of all-zero cells would flatter the correlation)
    live = exact.scores != 0
    a["live_spearman"] = agreement(atp.scores[live], exact.scores[live], "denoise")["spearman"]
    s["live_spearman"] = agreement(star.scores[live], exact.scores[live], "denoise")["spearman"]
    return {"group": group, "label": label, "cells": cells, "exact_s": exact_s, "atp_s": atp_s, "star_s": star_s,
            "atp": a, "star": s, "extrapolated": extrapolated}


def compare_full(group: str, label: str, model, task, pair, sites) -> dict:
    model.eval()
    exact_s, exact = timed(lambda: patch_sweep(model, task, pair, sites))
    atp_s, atp = timed(lambda: attribution_patch(model, task, pair, sites, exact_distributions=False, graddrop=False))
    star_s, star = timed(lambda: attribution_patch(model, task, pair, sites))
    return row(group, label, exact.scores.numel(), exact_s, atp_s, atp, star_s, star, exact)


def compare_sampled(group: str, label: str, model, task, pair, sites, sample: int, seed: int) -> dict:
    """Exact time extrapolated from a random sample of the cells the sweep would run;
    agreement on that sample plus the estimate's top 20 cells."""
    model.eval()
    atp_s, atp = timed(lambda: attribution_patch(model, task, pair, sites, exact_distributions=False, graddrop=False))
    star_s, star = timed(lambda: attribution_patch(model, task, pair, sites))
    with evaluating(model):
        setup_s, st = timed(lambda: _setup(model, task, pair, sites, "denoise", None))
        horizon_s, steps = timed(lambda: _causal_horizon(model, st))
        todo = [v for v, (i, t, e) in enumerate(st.variants) if t < steps and not _is_noop(st, i, t, e)]
        picked = random.Random(seed).sample(todo, min(sample, len(todo)))
        run_s, raw = timed(lambda: exact_cells(model, st, picked, st.s_corr))
    exact_s = setup_s + horizon_s + run_s / len(picked) * len(todo)
    est_flat = atp.scores.reshape(-1)
    top = torch.argsort(torch.nan_to_num(est_flat.abs(), nan=-1.0), descending=True)[:20].tolist()
    extra = [v for v in top if v not in set(picked)]
    with evaluating(model):
        raw_top = exact_cells(model, st, extra, st.s_corr)
    cells = picked + extra
    exact_rec = (torch.cat([raw, raw_top]) - st.s_corr) / (st.s_clean - st.s_corr)

    class Sub:  # the checked cells only, shaped like results for `row`
        def __init__(self, scores):
            self.scores = scores

    idx = torch.tensor(cells)
    print(f"  ({label}: {len(todo)} of {len(st.variants)} cells would run exactly; {len(picked)} sampled took "
          f"{run_s:.1f} s, {run_s / len(picked):.3f} s per cell)")
    return row(group, label, len(st.variants), exact_s, atp_s, Sub(atp.scores.reshape(-1)[idx]), star_s,
               Sub(star.scores.reshape(-1)[idx]), Sub(exact_rec), extrapolated=True)


# -- cases ------------------------------------------------------------------------------------------

def ntm_case(pairs: int, seed: int):
    task = make_task("copy", bits=8, min_length=20, max_length=20)
    if PYTORCH_NTM.exists():
        from mnemoscope.models.importers.pytorch_ntm import import_file

        model, _ = import_file(PYTORCH_NTM)
        label = "NTM (pytorch-ntm), copy L=20, T=41"
    else:
        torch.manual_seed(seed)
        model = build_model("ntm", dict(input_size=9, output_size=8, controller_size=100, memory_slots=128,
                                        memory_width=20))
        label = "NTM (fresh; pytorch-ntm fixture not found), copy L=20"
    return label, model, task, task.patch_pairs(pairs, seed)


def stack_case(pairs: int, seed: int, layers: int = 24, d_model: int = 256, T: int = 512):
    task = make_task("mqar", vocab_size=64, seq_len=T, num_pairs=16)
    torch.manual_seed(seed)
    model = build_model("sequence", dict(vocab_size=64, output_size=64, d_model=d_model, heads=4, rule="delta",
                                         blocks=["memory", "mlp"] * (layers // 2)))
    return f"random {layers}-layer DeltaNet stack, d_model {d_model}, MQAR T={T}", model, task, task.patch_pairs(pairs, seed)


def zoo_cases(pairs: int, seed: int):
    from mnemoscope.models.checkpoints import load_checkpoint

    for path in sorted(ZOO.glob("*.safetensors")):
        if "-step-" in path.name:
            continue
        ckpt = load_checkpoint(path)
        task = make_task(ckpt.meta.task)
        yield path.stem, ckpt.model, task, task.patch_pairs(pairs, seed)


def hf_cases(pairs: int, seed: int, folder: Path):
    sys.path.insert(0, str(REPO / "tests" / "models"))
    from test_hf import save_tiny  # the tiny configs the HF tests build

    from mnemoscope.models.importers.hf import import_hf_dir

    task = make_task("mqar", vocab_size=64, seq_len=64, num_pairs=8)
    for model_type in HF_TYPES:
        model = import_hf_dir(save_tiny(model_type, folder / model_type, seed=seed))
        yield f"HF {model_type} (tiny, random), MQAR T=64", model, task, task.patch_pairs(pairs, seed)


def fmt_agree(a: dict) -> str:
    s, live = (("  n/a" if a[k] is None else f"{a[k]:5.2f}") for k in ("spearman", "live_spearman"))
    r = " n/a" if a["top10_recall"] is None else f"{a['top10_recall']:4.1f}"
    return f"{s} {live} {r}"


def print_row(r: dict) -> None:
    ex = f"{r['exact_s']:8.1f}{'*' if r['extrapolated'] else ' '}"
    print(f"{r['label'][:58]:58} {r['cells']:6d} {ex} {r['atp_s']:6.2f} {r['exact_s'] / r['atp_s']:7.1f}x "
          f"{fmt_agree(r['atp'])}  {r['star_s']:6.2f} {r['exact_s'] / r['star_s']:7.1f}x {fmt_agree(r['star'])}")
    sys.stdout.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4, help="clean/corrupted pairs per sweep")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=["ntm", "stack", "zoo", "hf"], help="run these groups")
    p.add_argument("--stack-layers", type=int, default=24)
    p.add_argument("--stack-d-model", type=int, default=256)
    p.add_argument("--stack-T", type=int, default=512)
    p.add_argument("--stack-sample", type=int, default=48, help="exact cells timed for the stack's extrapolation")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.pairs} pair(s), seed {args.seed}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'case':58} {'cells':>6} {'exact s':>9} {'AtP s':>6} {'speed':>8} {'rho':>5} {'live':>5} {'top10':>4}  "
          f"{'AtP* s':>6} {'speed':>8} {'rho':>5} {'live':>5} {'top10':>4}")
    rows = []
    groups = args.only or ["ntm", "stack", "zoo", "hf"]
    if "ntm" in groups:
        label, model, task, pair = ntm_case(args.pairs, args.seed)
        rows.append(compare_full("ntm", label, model, task, pair, memory_sites(model)))
        print_row(rows[-1])
    if "stack" in groups:
        label, model, task, pair = stack_case(args.pairs, args.seed, args.stack_layers, args.stack_d_model, args.stack_T)
        rows.append(compare_sampled("stack", label, model, task, pair, memory_sites(model), args.stack_sample, args.seed))
        print_row(rows[-1])
    if "zoo" in groups:
        for label, model, task, pair in zoo_cases(args.pairs, args.seed):
            rows.append(compare_full("zoo", label, model, task, pair, memory_sites(model)))
            print_row(rows[-1])
    if "hf" in groups:
        with tempfile.TemporaryDirectory() as tmp:
            for label, model, task, pair in hf_cases(args.pairs, args.seed, Path(tmp)):
                rows.append(compare_full("hf", label, model, task, pair, memory_sites(model)))
                print_row(rows[-1])
    print("* extrapolated from a timed sample of exact cells; agreement on that sample plus the estimate's top 20")
    print("medians per group (rho, top-10 recall, speed-up):")
    for group in dict.fromkeys(r["group"] for r in rows):
        rs = [r for r in rows if r["group"] == group]
        for name in ("atp", "star"):
            rho = [r[name]["spearman"] for r in rs if r[name]["spearman"] is not None]
            live = [r[name]["live_spearman"] for r in rs if r[name]["live_spearman"] is not None]
            rec = [r[name]["top10_recall"] for r in rs if r[name]["top10_recall"] is not None]
            speed = [r["exact_s"] / r[f"{name}_s"] for r in rs]
            print(f"  {group:6} {'AtP ' if name == 'atp' else 'AtP*'}: rho {statistics.median(rho) if rho else float('nan'):.2f}"
                  f"  live rho {statistics.median(live) if live else float('nan'):.2f}"
                  f"  top-10 {statistics.median(rec) if rec else float('nan'):.2f}  speed-up {statistics.median(speed):.1f}x"
                  f"  ({len(rs)} case(s))")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
