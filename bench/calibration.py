"""The control suite's confusion matrix: truth x verdict (and warnings) on the held-out
seeds, and the margins by which each control clears its thresholds.

    python bench/calibration.py                 # held-out seeds 1 and 2, 64 sequences each
    python bench/calibration.py --seeds 0       # the calibration seed (thresholds chosen here)
    python bench/calibration.py --samples 128

Reads the committed controls (mnemoscope/controls/, built by `mnemoscope controls build`)
and re-analyses each with the reliance verdict alone (`reliance(model, task,
task.sample(samples, 0))`), so the numbers follow analysis/reliance.py as it is now.
"""
from __future__ import annotations

import argparse
import sys

import torch

import mnemoscope.analysis.reliance  # noqa: F401  (the module, not the function analysis re-exports)
rel_mod = sys.modules["mnemoscope.analysis.reliance"]
from mnemoscope.models import controls
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.tasks import make_task

SAMPLES = 64
TRUTHS = ("undetermined", "decorative", "functional", "redundant", "partial")


def judge(entry: dict, samples: int = SAMPLES) -> dict:
    """One control re-analysed: its verdict, warnings, whether that is its truth, margins."""
    ckpt = load_checkpoint(controls.default_controls_dir() / entry["file"])
    task = make_task(ckpt.meta.task)
    r = rel_mod.reliance(ckpt.model, task, task.sample(samples, 0), seed=0)
    codes = [w["code"] for w in r.warnings]
    truth = entry["truth"]
    return {"name": entry["name"], "family": entry["family"], "kind": entry["kind"], "seed": entry["seed"],
            "verdict": r.verdict, "warnings": codes, "ok": correct(entry["kind"], truth, r.verdict, codes),
            "built": built_as_designed(entry["kind"], r), "margin": margin(entry["kind"], r)}


def built_as_designed(kind: str, r) -> bool:
    """Whether training produced the model the recipe aims at, checked on the model itself:
    a redundant control must do the task with either path alone (each keeps at least half
    of the gap to chance, by its interval's lower bound). A control that fails this has no
    known truth; it is reported as a failed construction, not counted for or against the
    verdict."""
    if kind != "redundant":
        return True
    bypass = (r.components.get("bypass") or {}).get("sufficiency") or {}
    memory = r.sufficiency or {}
    lows = [(est.get("ci95") or [0.0, 0.0])[0] for est in (memory, bypass)]
    return min(lows) >= 0.5


def correct(kind: str, truth: dict, verdict: str, codes: list[str]) -> bool:
    """The control got its truth: its verdict (an untrained model may also be decorative, when
    removing memory moves nothing: the precedence says so; it must carry at_chance) and its
    warning."""
    if kind == "untrained":
        return verdict in ("undetermined", "decorative") and "at_chance" in codes
    ok = truth["verdict"] is None or verdict == truth["verdict"]
    return ok and (truth["warning"] is None or truth["warning"] in codes)


def margin(kind: str, r) -> str:
    """How far the deciding number lies past its threshold (positive: cleared)."""
    nec = r.necessity or {}
    lo, hi = (nec.get("ci95") or [0.0, 0.0])
    if kind == "functional":
        return f"necessity lo {lo:.2f} - HIGH {rel_mod.HIGH} = {lo - rel_mod.HIGH:+.2f}"
    if kind == "decorative":
        return f"necessity hi {hi:.2f} vs LOW {rel_mod.LOW}: {rel_mod.LOW - hi:+.2f}; output change {r.prob_change:.3f}"
    if kind == "redundant":
        comp = r.components or {}
        suf = ((comp.get("memory") or {}).get("sufficiency") or {}).get("ci95", [0, 0])[0]
        bsuf = ((comp.get("bypass") or {}).get("sufficiency") or {}).get("ci95", [0, 0])[0]
        joint = (r.joint_necessity or {}).get("ci95", [0, 0])[0]
        return (f"sufficiency lo memory {suf:.2f}, bypass {bsuf:.2f}, joint necessity lo {joint:.2f} "
                f"(HIGH {rel_mod.HIGH}); necessity hi {hi:.2f}")
    if kind == "sparse":
        pos = (r.per_position or {}).get("ci95", [0, 0])[0]
        return f"per-position lo {pos:.2f} - SPARSE {rel_mod.SPARSE} = {pos - rel_mod.SPARSE:+.2f}; necessity hi {hi:.2f}"
    if kind == "untrained":
        return f"clean {r.progress_from_chance:.2f} of the way from chance (AT_CHANCE {rel_mod.AT_CHANCE})"
    return ""


def matrix(rows: list[dict]) -> str:
    kinds = [k for k in controls.KINDS if any(r["kind"] == k for r in rows)]
    head = f"{'truth (kind)':<24}" + "".join(f"{v:>14}" for v in TRUTHS) + "   warnings"
    out = [head]
    for k in kinds:
        mine = [r for r in rows if r["kind"] == k]
        truth = controls.TRUTH[k]
        label = f"{k} ({truth[0] or truth[1]})"
        counts = "".join(f"{sum(r['verdict'] == v for r in mine):>14}" for v in TRUTHS)
        warn: dict[str, int] = {}
        for r in mine:
            for c in r["warnings"]:
                warn[c] = warn.get(c, 0) + 1
        out.append(f"{label:<24}{counts}   {', '.join(f'{c} {n}' for c, n in sorted(warn.items())) or '-'}")
    valid = [r for r in rows if r["built"]]
    out.append(f"{sum(r['ok'] for r in valid)} of {len(valid)} controls built as designed get their truth; "
               f"{len(rows) - len(valid)} not built as designed (no known truth; see below)")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=list(controls.HELD_OUT_SEEDS))
    p.add_argument("--samples", type=int, default=SAMPLES)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    index = controls.load_index()
    entries = [e for e in index["controls"] if e["seed"] in args.seeds]
    rows = [judge(e, args.samples) for e in entries]
    print(f"controls of seeds {args.seeds}, {args.samples} sequences each (seed 0 batch), "
          f"{rel_mod.DONOR_DRAWS} donor draws, 1000 bootstrap samples")
    print(matrix(rows))
    print("\nper control:")
    for r in rows:
        status = "ok " if r["ok"] else ("MISS" if r["built"] else "n/a ")
        print(f"  {r['name']:<24} {status} {r['verdict']:<12} "
              f"{','.join(r['warnings']) or '-':<28} {r['margin']}")
    built = {(e["family"], e["kind"]) for e in index["controls"]}
    absent = [f"{f.name}-{k}" for f in controls.FAMILIES for k in f.kinds if (f.name, k) not in built]
    if absent:
        print(f"\nnot built yet: {', '.join(absent)}")
    for fam, why in index.get("missing", {}).items():
        print(f"left out by design, {fam}: {why}")
    for name, why in controls.FAILED_CONSTRUCTIONS.items():
        print(f"not built as designed, {name}: {why}")
    return 0 if all(r["ok"] for r in rows if r["built"]) else 1


if __name__ == "__main__":
    sys.exit(main())
