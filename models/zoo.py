"""The model zoo: small trained checkpoints that show decorative versus used memory, each
retrained from a recipe (data, below) and a seed.

    build_zoo("mnemoscope/zoo")                      # every recipe; what `mnemoscope zoo build` runs
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
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

ZOO_FORMAT = 1
ANALYZE_SAMPLES = 32  # `mnemoscope analyze`'s defaults, so the index matches what it prints
ANALYZE_SEED = 0


def default_zoo_dir() -> Path:
    """Where the committed zoo lives: the `zoo/` folder of the installed mnemoscope package."""
    import mnemoscope

    return Path(mnemoscope.__file__).resolve().parent / "zoo"


@dataclass(frozen=True)
class Recipe:
    """One zoo checkpoint: what to train, how, and what it is meant to show.

    config: the model config without the sizes the task dictates (input_size, output_size,
        vocab_size are filled in from the task).
    remedies: the remedy options of `mnemoscope train`: bypass_dropout, controller_size,
        memory_init, dnc_fixes, window (config fields) and reconstruction_loss (weight) with
        reconstruction_horizon.
    train: keyword arguments of `train()` (steps, batch_size, lr, clip, clip_norm,
        curriculum, eval_params, ...); `seed` is separate.
    pair: the recipe this one differs from only in `remedies`, for the flip comparisons.
    expect: the verdict the recipe is meant to produce (the build reports any mismatch).
    """

    name: str
    arch: str
    config: dict
    task: dict
    train: dict
    shows: str
    seed: int = 0
    remedies: dict = field(default_factory=dict)
    series: int = 0
    pair: str | None = None
    expect: str | None = None

    def model_config(self, task) -> dict:
        from .registry import architecture
        from .remedies import config_remedies

        cls = architecture(self.arch)
        names = {f.name for f in dataclasses.fields(cls.Config)}
        derived = {"input_size": task.input_size, "output_size": task.output_size}
        if "vocab_size" in names and task.vocab_size is not None:
            derived["vocab_size"] = task.vocab_size
        r = self.remedies
        fixes = config_remedies(cls.Config, self.arch, bypass_dropout=r.get("bypass_dropout"),
                                controller_size=r.get("controller_size"), memory_init=r.get("memory_init"),
                                dnc_fixes=bool(r.get("dnc_fixes")), window=r.get("window"))
        clash = sorted(k for k in fixes if k in self.config)
        if clash:
            raise ValueError(f"recipe {self.name!r}: {clash} set both in config and in remedies")
        return {**{k: v for k, v in derived.items() if k in names}, **self.config, **fixes}

    def describe(self) -> dict:
        return dataclasses.asdict(self)


_KNOWN_REMEDIES = {"bypass_dropout", "controller_size", "memory_init", "dnc_fixes", "window",
                   "reconstruction_loss", "reconstruction_horizon"}

# -- the recipes ----------------------------------------------------------------------------------

SHORT_COPY = {"name": "copy", "params": {"bits": 8, "min_length": 1, "max_length": 3}}
# random memory init: with the constant init and all-zero initial weightings every slot
# receives the same writes forever, so the memory would act as a single vector
NTM_SHORT = {"memory_slots": 16, "memory_width": 8, "memory_init": "random"}
NTM_SHORT_TRAIN = {"steps": 3000, "batch_size": 16, "lr": 3e-3, "clip": 10.0, "eval_params": {"min_length": 3}}
RECALL = {"name": "associative_recall", "params": {"bits": 6, "item_length": 1, "min_items": 2, "max_items": 4}}
MQAR = {"name": "mqar", "params": {"vocab_size": 64, "seq_len": 64, "num_pairs": 8}}
MQAR_STACK = {"d_model": 32, "conv_size": 4, "chunk_size": 64, "blocks": ["memory", "mlp", "memory", "mlp"]}
MQAR_TRAIN = {"steps": 400, "batch_size": 32, "lr": 3e-3, "clip": None, "clip_norm": 1.0}
HYBRID = {"d_model": 32, "heads": 8, "conv_size": 4, "chunk_size": 64, "rule": "linear",
          "blocks": ["memory", "mlp", "attention", "mlp"]}  # memory first: attention-first hybrids train worse

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        name="ntm-copy-big-controller",
        arch="ntm", config={**NTM_SHORT, "controller_size": 256}, task=SHORT_COPY, train=NTM_SHORT_TRAIN,
        shows="controller bypass: on copies of 1-3 vectors a 256-unit LSTM controller keeps the sequence in "
              "its own state; memory is written and read, but the outputs ignore what is read",
        expect="decorative",
    ),
    Recipe(
        name="ntm-copy-bypass-dropout",
        arch="ntm", config={**NTM_SHORT, "controller_size": 256}, task=SHORT_COPY, train=NTM_SHORT_TRAIN,
        remedies={"bypass_dropout": 0.9}, pair="ntm-copy-big-controller",
        shows="the same model, data and seed with bypass dropout 0.9 (the controller's path into the output "
              "is dropped for 90% of training sequences): the answer comes through memory. The zoo's own "
              "trained copy NTM",
        expect="functional",
    ),
    Recipe(
        name="ntm-copy-reconstruction",
        arch="ntm", config={**NTM_SHORT, "controller_size": 256}, task=SHORT_COPY, train=NTM_SHORT_TRAIN,
        remedies={"reconstruction_loss": 1.0, "reconstruction_horizon": 6}, pair="ntm-copy-big-controller",
        shows="the same with the auxiliary reconstruction loss (Trinh et al. 2018): a decoder must recover "
              "the last 6 inputs from the memory reads, so the reads carry the sequence -- does the output "
              "then use them?",
    ),
    Recipe(
        name="ntm-copy-small-controller",
        arch="ntm", config=NTM_SHORT, task=SHORT_COPY, train=NTM_SHORT_TRAIN,
        remedies={"controller_size": 16}, pair="ntm-copy-big-controller", series=10,
        shows="the same with a 16-unit controller (Santoro et al. 2016's 'hamstringing'), too small to hold "
              "the sequence itself, so it has to use memory; 10 checkpoints of its run follow reliance "
              "through training",
    ),
    Recipe(
        name="dnc-associative-recall",
        arch="dnc", config={"controller_size": 64, "memory_slots": 16, "memory_width": 16, "read_heads": 2},
        task=RECALL, train={"steps": 3000, "batch_size": 16, "lr": 3e-3, "clip": 10.0,
                            "eval_params": {"min_items": 4}},
        shows="a DNC (Graves et al. 2016) answering associative-recall queries from memory",
        expect="functional",
    ),
    Recipe(
        name="mqar-linear-attention",
        arch="sequence", config={**MQAR_STACK, "heads": 4, "rule": "linear"}, task=MQAR, train=MQAR_TRAIN,
        shows="MQAR (64 tokens, 8 key-value pairs) with two linear-attention layers, 4 heads of 8x8 state",
        expect="functional",
    ),
    Recipe(
        name="mqar-deltanet",
        arch="sequence", config={**MQAR_STACK, "heads": 4, "rule": "delta"}, task=MQAR, train=MQAR_TRAIN,
        shows="the same with the delta rule (DeltaNet, Yang et al. 2024): same state size",
        expect="functional",
    ),
    Recipe(
        name="mqar-gated-deltanet",
        arch="sequence", config={**MQAR_STACK, "heads": 4, "rule": "gated_delta"}, task=MQAR, train=MQAR_TRAIN,
        shows="the same with the gated delta rule (Gated DeltaNet, Yang et al. 2025): same state size",
        expect="functional",
    ),
    Recipe(
        name="hybrid-wide-window",
        arch="sequence", config={**HYBRID, "window": 64}, task=MQAR, train=MQAR_TRAIN,
        shows="a hybrid of linear attention and sliding-window attention whose window covers the whole "
              "sequence: attention could answer every query without the memory",
    ),
    Recipe(
        name="hybrid-short-window",
        arch="sequence", config=HYBRID, task=MQAR, train=MQAR_TRAIN,
        remedies={"window": 4}, pair="hybrid-wide-window",
        shows="the same hybrid with a 4-token window (SWAX): attention cannot reach the pairs, so recall "
              "has to go through memory",
    ),
)

# Studies: recipes behind the README's findings that are not committed (too slow for the zoo's
# budget); `mnemoscope zoo build --out DIR --only NAME` trains them like the others.
_SMALL_STATE = {**MQAR_STACK, "heads": 8}
_LONG = {**MQAR_TRAIN, "steps": 1200}
STUDIES: tuple[Recipe, ...] = (
    Recipe(name="study-mqar-linear-small-state", arch="sequence", config={**_SMALL_STATE, "rule": "linear"},
           task=MQAR, train=_LONG, shows="linear attention, 8 heads of 4x4 state, 1200 steps"),
    Recipe(name="study-mqar-deltanet-small-state", arch="sequence", config={**_SMALL_STATE, "rule": "delta"},
           task=MQAR, train=_LONG, shows="DeltaNet, 8 heads of 4x4 state, 1200 steps"),
    Recipe(name="study-mqar-gated-deltanet-small-state", arch="sequence",
           config={**_SMALL_STATE, "rule": "gated_delta"}, task=MQAR, train=_LONG,
           shows="Gated DeltaNet, 8 heads of 4x4 state, 1200 steps"),
    Recipe(name="study-ntm-copy-small-controller-reconstruction", arch="ntm", config=NTM_SHORT, task=SHORT_COPY,
           train=NTM_SHORT_TRAIN, remedies={"controller_size": 16, "reconstruction_loss": 1.0,
                                            "reconstruction_horizon": 6},
           pair="ntm-copy-small-controller",
           shows="the small-controller NTM with the reconstruction loss"),
)


def recipes() -> list[Recipe]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """A zoo recipe or a study, by name."""
    for r in (*RECIPES, *STUDIES):
        if r.name == name:
            return r
    raise ValueError(f"no zoo recipe {name!r}; recipes: {[r.name for r in RECIPES]}; "
                     f"studies: {[r.name for r in STUDIES]}")


def check_recipe(recipe: Recipe) -> None:
    """Raise a ValueError naming the problem when a recipe cannot be trained as written."""
    from .registry import architecture
    from .tasks import make_task
    from .training import train

    unknown = sorted(set(recipe.remedies) - _KNOWN_REMEDIES)
    if unknown:
        raise ValueError(f"recipe {recipe.name!r}: unknown remedies {unknown}; known: {sorted(_KNOWN_REMEDIES)}")
    task = make_task(recipe.task)
    config = recipe.model_config(task)
    architecture(recipe.arch)(architecture(recipe.arch).Config(**config))
    allowed = set(inspect.signature(train).parameters) - {"model", "task", "seed", "out_dir", "checkpoint_every",
                                                          "extra_loss", "record", "name", "progress"}
    bad = sorted(set(recipe.train) - allowed)
    if bad:
        raise ValueError(f"recipe {recipe.name!r}: train options {bad} are not train() arguments")
    if "steps" not in recipe.train:
        raise ValueError(f"recipe {recipe.name!r}: train needs steps")
    if recipe.series and recipe.train["steps"] % recipe.series:
        raise ValueError(f"recipe {recipe.name!r}: steps {recipe.train['steps']} is not a multiple of series {recipe.series}")
    if recipe.pair is not None:
        other = get_recipe(recipe.pair)
        same = (other.arch, other.task, other.train, other.seed) == (recipe.arch, recipe.task, recipe.train, recipe.seed)
        if same:  # the configs may differ only where a remedy sets a field (controller_size, window, ...)
            mine, theirs = config, other.model_config(task)
            remedied = set(recipe.remedies) | set(other.remedies)
            differ = {k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)}
            same = differ <= remedied
        if not same or other.remedies == recipe.remedies:
            raise ValueError(f"recipe {recipe.name!r} must differ from its pair {recipe.pair!r} only in remedies")


# -- building ---------------------------------------------------------------------------------------

def train_recipe(recipe: Recipe, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Train one recipe; write `<name>.safetensors` (and its series) into out_dir.
    Returns {"files": [...], "seconds", "final_metrics", "steps", "training": last losses}."""
    from .checkpoints import load_checkpoint, save_checkpoint
    from .registry import build_model
    from .remedies import reconstruction_loss
    from .tasks import make_task
    from .training import train

    check_recipe(recipe)
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
    options = dict(recipe.train)
    steps = int(options.pop("steps"))
    every = steps // recipe.series if recipe.series else None
    zoo_meta = {"recipe": recipe.name, "shows": recipe.shows, "remedies": recipe.remedies, "pair": recipe.pair,
                "series": recipe.name if recipe.series else None}
    with tempfile.TemporaryDirectory(prefix=f"zoo-{recipe.name}-") as tmp:
        result = train(model, task, steps=steps, seed=recipe.seed, out_dir=tmp, checkpoint_every=every,
                       extra_loss=extra_loss, record=record, name=recipe.name, progress=progress, **options)
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


def analyze_numbers(path: str | Path, *, samples: int = ANALYZE_SAMPLES, seed: int = ANALYZE_SEED,
                    full: bool = True) -> dict:
    """The numbers of `mnemoscope analyze PATH --samples S --seed N --json` that the index keeps.
    With full=False only the reliance verdict is computed (the same numbers, much faster)."""
    from mnemoscope.analysis import analyze, reliance
    from .checkpoints import load_checkpoint
    from .tasks import make_task

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
                     "prob_change": rel.prob_change, "flip_rate": rel.flip_rate,
                     "memory_share": rel.memory_share, "at_chance": rel.at_chance},
    }


def _entry(recipe: Recipe, path: Path, numbers: dict, seconds: float | None, training: dict | None = None) -> dict:
    from .checkpoints import inspect_checkpoint

    meta = inspect_checkpoint(path)
    zoo = (meta.extra or {}).get("zoo", {})
    return {
        "file": path.name,
        "name": meta.name,
        "recipe": recipe.name,
        "final": bool(zoo.get("final", True)),
        "series": zoo.get("series"),
        "arch": meta.arch,
        "task": meta.task,
        "step": meta.step,
        "remedies": recipe.remedies,
        "pair": recipe.pair,
        "expect": recipe.expect if zoo.get("final", True) else None,
        "shows": recipe.shows,
        "train_seconds": seconds,
        "training": training,  # the last steps' mean losses (extra_loss: the reconstruction loss)
        **numbers,
    }


def build_zoo(out_dir: str | Path | None = None, only: Iterable[str] | None = None, *,
              log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Train every recipe (or those in `only`), analyse every checkpoint and write
    `index.json`. With `only`, the other recipes' entries already in the index are kept."""
    out = Path(out_dir) if out_dir is not None else default_zoo_dir()
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(RECIPES) if not only else [get_recipe(n) for n in only]
    for r in chosen:
        check_recipe(r)
    studies = [r.name for r in chosen if r in STUDIES]
    if studies and out.resolve() == default_zoo_dir():
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
    order = {r.name: i for i, r in enumerate(RECIPES)}
    entries.sort(key=lambda e: (order.get(e["recipe"], len(order)), not e["final"], e["step"]))
    index = {
        "format": ZOO_FORMAT,
        "analyze": {"samples": ANALYZE_SAMPLES, "seed": ANALYZE_SEED},
        "torch": torch.__version__,
        "threads": 1,
        "recipe_seconds": seconds,
        "build_seconds": round(sum(seconds.get(r.name, 0.0) for r in RECIPES), 1),
        "checkpoints": entries,
    }
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    for entry in entries:
        if entry["expect"] and entry["expect"] != entry["reliance"]["verdict"]:
            log(f"[zoo] note: {entry['file']} is {entry['reliance']['verdict']}, its recipe expects {entry['expect']}")
    return index


def load_index(zoo_dir: str | Path | None = None) -> dict:
    path = Path(zoo_dir) if zoo_dir is not None else default_zoo_dir()
    index = path / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"{index}: no zoo index; build it with `mnemoscope zoo build`")
    return json.loads(index.read_text())


def zoo_files(zoo_dir: str | Path | None = None) -> list[Path]:
    """The zoo's checkpoint files in index order (finals first within each recipe)."""
    path = Path(zoo_dir) if zoo_dir is not None else default_zoo_dir()
    return [path / e["file"] for e in load_index(path)["checkpoints"]]


__all__ = ["Recipe", "RECIPES", "STUDIES", "recipes", "get_recipe", "check_recipe", "train_recipe", "analyze_numbers",
           "build_zoo", "load_index", "zoo_files", "default_zoo_dir"]
