"""MQAR (seq 64, 8 pairs) with the same training budget for each memory architecture, on the CPU.

    python bench/mqar_compare.py                      # all models, prints a table
    python bench/mqar_compare.py --only delta ssm     # a subset
    python bench/mqar_compare.py --steps 600 --json runs/mqar.json

Every model has d_model 64, four residual blocks (two mixing, two MLP), the same optimiser, steps,
batch size, learning rate and seed. Memory layers use a short causal conv of 4 (as DeltaNet, Gated
DeltaNet and Zoology's baselines do; Mamba's own conv is 4 too): without some token shift a single
linear-memory layer cannot bind a key to the value in the next position.

Besides the accuracy on the queried positions, the table gives the accuracy with every memory block's
contribution zeroed (`model.ablation("memory")`) and, for hybrids, with the local attention zeroed:
a hybrid whose attention window covers the whole sequence can answer without its memory.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from mnemoscope.models import build_model, run_with_sites
from mnemoscope.models.tasks import make_task
from mnemoscope.models.training import TrainConfig, train

TASK = dict(vocab_size=64, seq_len=64, num_pairs=8)
COMMON = dict(d_model=64, heads=2, conv_size=4, chunk_size=64, ssm_d_state=16, ssm_expand=2)
MEMORY_ONLY = ["memory", "mlp", "memory", "mlp"]
HYBRID = ["memory", "mlp", "attention", "mlp"]  # memory first: attention-first hybrids train worse
MODELS = {
    "linear": dict(blocks=MEMORY_ONLY, rule="linear"),
    "delta": dict(blocks=MEMORY_ONLY, rule="delta"),
    "gated_delta": dict(blocks=MEMORY_ONLY, rule="gated_delta"),
    "ssm": dict(blocks=["ssm", "mlp", "ssm", "mlp"]),
    "hybrid_w4": dict(blocks=HYBRID, rule="gated_delta", window=4),
    "hybrid_w64": dict(blocks=HYBRID, rule="gated_delta", window=64),
}


def accuracy(model, task, batch, interventions=()) -> float:
    model.eval()
    with torch.no_grad():
        logits, _ = run_with_sites(model, batch.inputs, interventions=list(interventions))
    return float(task.metric(logits, batch).mean())


def run_one(name: str, args) -> dict:
    task = make_task("mqar", **TASK)
    common = {**COMMON, "d_model": args.d_model, "heads": args.heads}
    config = dict(vocab_size=task.vocab_size, output_size=task.output_size, **common, **MODELS[name])
    torch.manual_seed(args.seed)
    model = build_model("sequence", config)
    start = time.perf_counter()
    result = train(model, task, TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                            clip=None, clip_norm=1.0, eval_size=args.eval_size, progress=False))
    seconds = time.perf_counter() - start
    batch = task.sample(args.eval_size, seed=12345)  # held out: not the training or the trainer's eval seeds
    row = {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "steps": result.steps,
        "seconds": round(seconds, 1),
        "accuracy": accuracy(model, task, batch),
        "no_memory": accuracy(model, task, batch, model.ablation("memory")),
        "no_attention": accuracy(model, task, batch, model.ablation("attention")) if "attention" in config["blocks"] else None,
        "chance": task.chance(),
        "config": config,
    }
    print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    return row


def table(rows: list[dict]) -> str:
    head = f"{'model':<12} {'params':>7} {'steps':>6} {'sec':>6} {'acc':>6} {'no mem':>7} {'no attn':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        na = "-" if r["no_attention"] is None else f"{r['no_attention']:.3f}"
        lines.append(f"{r['model']:<12} {r['params']:>7} {r['steps']:>6} {r['seconds']:>6.0f} "
                     f"{r['accuracy']:>6.3f} {r['no_memory']:>7.3f} {na:>8}")
    lines.append(f"chance = {rows[0]['chance']:.3f}" if rows else "")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(MODELS), help="models to run (default: all)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--d-model", type=int, default=COMMON["d_model"], help="smaller = less state per head")
    p.add_argument("--heads", type=int, default=COMMON["heads"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the rows (with configs) here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [run_one(name, args) for name in (args.only or list(MODELS))]
    print(f"\nMQAR {TASK}, d_model={args.d_model}, heads={args.heads}, steps={args.steps}, batch={args.batch_size}, "
          f"lr={args.lr}, Adam, clip_norm=1, seed={args.seed}")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"task": TASK, "args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
