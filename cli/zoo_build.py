"""Building the model zoo: train every recipe of models/zoo.py, analyse every checkpoint and
write `index.json`. This is what `mnemoscope zoo build` runs.

    build_zoo("mnemoscope/zoo")                      # every recipe
    build_zoo("/tmp/zoo", only=["ntm-copy-big-controller"])   # just one (with its series, if any)

Each recipe is trained with `models.training.train` exactly as `mnemoscope train` would with
the same options (remedies included: config fields such as `bypass_dropout`, and the
reconstruction loss of models/remedies.py), then saved as `<name>.safetensors` (a recipe
with `series=n` also keeps `<name>-step-XXXXXX.safetensors` every steps/n steps). Then each
checkpoint is analysed exactly as `mnemoscope analyze FILE --samples 32 --seed 0` does, and
`index.json` records its reliance verdict and score, metric, output change and memory share,
next to what the recipe is meant to show.

Training is deterministic on the CPU with one thread (same recipe, same weights); the
checkpoints' `created_at` differs between builds, so files differ byte-wise but not in any
weight. Rebuilding with other torch versions or thread counts can change weights slightly.

It lives with the command line, not in models/, because it trains AND analyses: models/
never imports analysis.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from mnemoscope.analysis import ANALYSIS_VERSION
from mnemoscope.models import zoo

from .commands.analyze import DEFAULT_SAMPLES, DEFAULT_SEED

ZOO_FORMAT = 1
# `mnemoscope analyze`'s defaults, so the index matches what it prints
ANALYZE_SAMPLES = DEFAULT_SAMPLES
ANALYZE_SEED = DEFAULT_SEED


def train_recipe(recipe: zoo.Recipe, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Train one recipe; write `<name>.safetensors` (and its series) into out_dir.
    Returns {"files": [...], "seconds", "final_metrics", "steps", "training": last losses}."""
    from mnemoscope.models.checkpoints import load_checkpoint, save_checkpoint
    from mnemoscope.models.registry import build_model
    from mnemoscope.models.remedies import reconstruction_loss
    from mnemoscope.models.tasks import make_task
    from mnemoscope.models.training import train

    zoo.check_recipe(recipe)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(recipe.task)
    config = recipe.model_config(task)
    # the order of `mnemoscope train`: seed, build the model, then the loss's decoder
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.arch, config)
    extra_loss, record = None, ()
    if recipe.remedies.get("reconstruction_loss") is not None:
        extra_loss = reconstruction_loss(model, task, weight=float(recipe.remedies["reconstruction_loss"]),
                                         horizon=int(recipe.remedies.get("reconstruction_horizon", 6)))
        record = extra_loss.sites
    steps = int(recipe.train["steps"])
    every = steps // recipe.series if recipe.series else None
    zoo_meta = {"recipe": recipe.name, "shows": recipe.shows, "remedies": recipe.remedies, "pair": recipe.pair,
                "series": recipe.name if recipe.series else None}
    with tempfile.TemporaryDirectory(prefix=f"zoo-{recipe.name}-") as tmp:
        options = recipe.train_config(out_dir=tmp, checkpoint_every=every, name=recipe.name, progress=progress)
        result = train(model, task, options, extra_loss=extra_loss, record=record)
        files = []
        for path in result.checkpoints:
            loaded = load_checkpoint(path)
            final = path.name == "final.safetensors"
            if not final and loaded.meta.step == result.steps:
                continue  # the same weights as the final checkpoint, which stands for this step
            name = recipe.name if final else f"{recipe.name}-step-{loaded.meta.step:06d}"
            extra = {**(loaded.meta.extra or {}), "zoo": {**zoo_meta, "final": final}}
            target = out / f"{name}.safetensors"
            save_checkpoint(target, loaded.model, task=loaded.meta.task, step=loaded.meta.step,
                            metrics=loaded.meta.metrics, name=name, extra=extra)
            files.append(target)
    last = result.history[-1] if result.history else {}
    training = {k: last.get(k) for k in ("train_loss", "extra_loss") if last.get(k) is not None}
    return {"files": files, "seconds": result.seconds, "final_metrics": result.final_metrics,
            "steps": result.steps, "training": training}


def analyze_numbers(path: str | Path, *, samples: int | None = None, seed: int | None = None,
                    full: bool = True) -> dict:
    """The numbers of `mnemoscope analyze PATH --samples S --seed N --json` that the index keeps
    (S and N default to ANALYZE_SAMPLES and ANALYZE_SEED). With full=False only the reliance
    verdict is computed (the same numbers, much faster)."""
    from mnemoscope.analysis import analyze, reliance
    from mnemoscope.models.checkpoints import load_checkpoint
    from mnemoscope.models.tasks import make_task

    samples = ANALYZE_SAMPLES if samples is None else samples
    seed = ANALYZE_SEED if seed is None else seed
    ckpt = load_checkpoint(path)
    task = make_task(ckpt.meta.task)
    if full:
        rel = analyze(ckpt.model, task, samples=samples, seed=seed).reliance
    else:
        rel = reliance(ckpt.model, task, task.sample(samples, seed), seed=seed)
    return {
        "metric": {"name": rel.metric_name, "clean": rel.metric_clean, "ablated": rel.metric_ablated,
                   "chance": rel.chance, "higher_is_better": rel.higher_is_better},
        "reliance": {"verdict": rel.verdict, "score": rel.score, "ci95": list(rel.ci95),
                     "necessity": rel.necessity, "sufficiency": rel.sufficiency,
                     "bypass": (rel.components.get("bypass") or None), "stability": rel.stability,
                     "warnings": [w["code"] for w in rel.warnings],
                     "prob_change": rel.prob_change, "flip_rate": rel.flip_rate,
                     "memory_share": rel.memory_share, "at_chance": rel.at_chance,
                     # per layer (models with per-layer sites): its necessity alone, and whether the task needs it
                     **({"layers": [{k: row[k] for k in ("layer", "kind", "necessity", "needed")} for row in rel.layers]}
                        if rel.layers else {})},
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seed_summary(rows: list[dict], seed0: str | None = None) -> dict:
    """A recipe's verdict over the seeds of its zoo-sweep rows: how many seeds there are, how
    many give the committed (seed 0) checkpoint's verdict, every verdict's count, and the
    spread of necessity and sufficiency."""
    verdicts: dict[str, int] = {}
    for r in rows:
        verdicts[str(r.get("verdict"))] = verdicts.get(str(r.get("verdict")), 0) + 1
    seed0 = seed0 or next((str(r.get("verdict")) for r in rows if r.get("seed") == 0), None)

    def spread(name: str) -> dict | None:
        values = [r[name] for r in rows if isinstance(r.get(name), (int, float))]
        if not values:
            return None
        return {"min": min(values), "max": max(values), "mean": sum(values) / len(values)}

    return {"n": len(rows), "seeds": sorted(r["seed"] for r in rows), "agree": verdicts.get(seed0, 0) if seed0 else 0,
            "verdicts": dict(sorted(verdicts.items(), key=lambda kv: -kv[1])),
            "necessity": spread("necessity"), "sufficiency": spread("sufficiency")}


def attach_seeds(index: dict, results: dict) -> dict:
    """Each final index entry gets `seeds`: its recipe's verdict over the zoo sweep's seeds
    (sweeps/zoo.toml's results), with the sweep's name and version; entries of recipes the
    sweep has no rows for get none."""
    by_recipe: dict[str, list[dict]] = {}
    for row in results.get("rows", []):
        by_recipe.setdefault(row.get("recipe"), []).append(row)
    for entry in index["checkpoints"]:
        rows = by_recipe.get(entry["recipe"]) if entry["final"] else None
        entry["seeds"] = seed_summary(rows, entry["reliance"]["verdict"]) if rows else None
    index["seeds_from"] = {"sweep": results.get("name"), "version": results.get("version"),
                           "seeds": results.get("seeds"), "updated_at": results.get("updated_at")}
    return index


def default_seed_results() -> Path:
    """The committed results of the zoo sweep (a source checkout's sweeps/results/zoo/)."""
    return Path(__file__).resolve().parent.parent / "sweeps" / "results" / "zoo"


def reanalyze_zoo(out_dir: str | Path | None = None, *, log: Callable[[str], None] = print) -> dict:
    """Recompute every index entry's numbers from its committed checkpoint, without retraining:
    what the index needs when the analysis (not the models) changed."""
    out = Path(out_dir) if out_dir is not None else zoo.default_zoo_dir()
    index_path = out / "index.json"
    index = json.loads(index_path.read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for entry in index["checkpoints"]:
            t0 = time.perf_counter()
            entry.update(analyze_numbers(out / entry["file"]), sha256=_sha256(out / entry["file"]))
            rel = entry["reliance"]
            log(f"[zoo]   {entry['file']}: {rel['verdict']} (necessity {rel['score']:.2f}, "
                f"analysed in {time.perf_counter() - t0:.1f}s)")
    finally:
        torch.set_num_threads(threads)
    index["analyze"] = {"samples": ANALYZE_SAMPLES, "seed": ANALYZE_SEED}
    index["analysis_version"] = ANALYSIS_VERSION
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    return index


def _entry(recipe: zoo.Recipe, path: Path, numbers: dict, seconds: float | None, training: dict | None = None) -> dict:
    from mnemoscope.models.checkpoints import inspect_checkpoint

    meta = inspect_checkpoint(path)
    built = (meta.extra or {}).get("zoo", {})
    return {
        "file": path.name,
        "sha256": _sha256(path),
        "name": meta.name,
        "recipe": recipe.name,
        "final": bool(built.get("final", True)),
        "series": built.get("series"),
        "arch": meta.arch,
        **({"model_type": meta.config["hf_config"].get("model_type")} if meta.arch == "hf" else {}),
        "task": meta.task,
        "step": meta.step,
        "remedies": recipe.remedies,
        "pair": recipe.pair,
        "expect": recipe.expect if built.get("final", True) else None,
        "shows": recipe.shows,
        "train_seconds": seconds,
        "training": training,  # the last steps' mean losses (extra_loss: the reconstruction loss)
        **numbers,
    }


def build_zoo(out_dir: str | Path | None = None, only: Iterable[str] | None = None, *,
              log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Train every recipe (or those in `only`), analyse every checkpoint and write
    `index.json`. With `only`, the other recipes' entries already in the index are kept."""
    out = Path(out_dir) if out_dir is not None else zoo.default_zoo_dir()
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(zoo.RECIPES) if not only else [zoo.get_recipe(n) for n in only]
    for r in chosen:
        zoo.check_recipe(r)
    studies = [r.name for r in chosen if r in zoo.STUDIES]
    if studies and out.resolve() == zoo.default_zoo_dir():
        raise ValueError(f"{studies} are studies, not part of the bundled zoo; build them elsewhere with --out DIR")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # determinism, and the build shares the machine
    index_path = out / "index.json"
    old = json.loads(index_path.read_text()) if index_path.exists() and only else {}
    names = {r.name for r in chosen}
    entries = [e for e in old.get("checkpoints", []) if e["recipe"] not in names]
    seconds: dict[str, float] = dict(old.get("recipe_seconds", {}))  # train + analyse, per recipe
    try:
        for recipe in chosen:
            start = time.perf_counter()
            for stale in out.glob(f"{recipe.name}-step-*.safetensors"):
                stale.unlink()
            log(f"[zoo] training {recipe.name} ({recipe.arch} on {recipe.task['name']}, "
                f"{recipe.train['steps']} steps, remedies {recipe.remedies or 'none'})")
            done = train_recipe(recipe, out, progress=progress)
            for path in done["files"]:
                t0 = time.perf_counter()
                numbers = analyze_numbers(path)
                final = path.name == f"{recipe.name}.safetensors"
                entries.append(_entry(recipe, path, numbers, round(done["seconds"], 1) if final else None,
                                      done["training"] if final else None))
                rel = numbers["reliance"]
                log(f"[zoo]   {path.name}: {rel['verdict']} (score {rel['score']:.2f}, "
                    f"{numbers['metric']['name']} {numbers['metric']['clean']:.3g}, "
                    f"analysed in {time.perf_counter() - t0:.1f}s)")
            seconds[recipe.name] = round(time.perf_counter() - start, 1)
    finally:
        torch.set_num_threads(threads)
    order = {r.name: i for i, r in enumerate(zoo.RECIPES)}
    entries.sort(key=lambda e: (order.get(e["recipe"], len(order)), not e["final"], e["step"]))
    index = {
        "format": ZOO_FORMAT,
        "analyze": {"samples": ANALYZE_SAMPLES, "seed": ANALYZE_SEED},
        "analysis_version": ANALYSIS_VERSION,  # the demo shows the index's verdicts only when they are current
        "torch": torch.__version__,
        "threads": 1,
        "recipe_seconds": seconds,
        "build_seconds": round(sum(seconds.get(r.name, 0.0) for r in zoo.RECIPES), 1),
        "checkpoints": entries,
    }
    seed_results = default_seed_results() / "results.json"
    if seed_results.is_file():  # a source checkout: the zoo sweep's verdicts over seeds
        attach_seeds(index, json.loads(seed_results.read_text()))
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    for entry in entries:
        if entry["expect"] and entry["expect"] != entry["reliance"]["verdict"]:
            log(f"[zoo] note: {entry['file']} is {entry['reliance']['verdict']}, its recipe expects {entry['expect']}")
    return index


__all__ = ["ZOO_FORMAT", "ANALYZE_SAMPLES", "ANALYZE_SEED", "train_recipe", "analyze_numbers", "build_zoo", "reanalyze_zoo",
           "seed_summary", "attach_seeds", "default_seed_results"]
