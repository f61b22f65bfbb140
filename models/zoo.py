"""The model zoo's recipes: small checkpoints that show decorative versus used memory, each
retrained from a recipe (data, below) and a seed, and the lookups of the built zoo
(`load_index`, `zoo_files`).

Building the zoo (training each recipe as `mnemoscope train` would with the same options,
then analysing every checkpoint as `mnemoscope analyze` does and writing `index.json`) is
the command line's job: `mnemoscope.cli.zoo_build` (cli/zoo_build.py), run by
`mnemoscope zoo build`. This module stays data: it names models, tasks and training
options, and analyses nothing.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .training import TrainConfig

# TrainConfig fields a recipe does not set: the recipe's own seed, and where and how the
# build runs it (its series sets checkpoint_every)
_BUILD_OPTIONS = {"seed", "out_dir", "checkpoint_every", "name", "progress"}


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
    train: TrainConfig options (steps, batch_size, lr, clip, clip_norm, curriculum,
        eval_params, ...); `seed` is separate.
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
                                bypass_bottleneck=r.get("bypass_bottleneck"),
                                controller_size=r.get("controller_size"), memory_init=r.get("memory_init"),
                                dnc_fixes=bool(r.get("dnc_fixes")), window=r.get("window"))
        clash = sorted(k for k in fixes if k in self.config)
        if clash:
            raise ValueError(f"recipe {self.name!r}: {clash} set both in config and in remedies")
        return {**{k: v for k, v in derived.items() if k in names}, **self.config, **fixes}

    def train_config(self, **build) -> TrainConfig:
        """The recipe's TrainConfig: its train options and seed, plus how a build runs it
        (out_dir, checkpoint_every, name, progress)."""
        return TrainConfig(**self.train, seed=self.seed, **build)

    def describe(self) -> dict:
        return dataclasses.asdict(self)


_KNOWN_REMEDIES = {"bypass_dropout", "bypass_bottleneck", "controller_size", "memory_init", "dnc_fixes", "window",
                   "reconstruction_loss", "reconstruction_horizon"}

# -- the recipes ----------------------------------------------------------------------------------

SHORT_COPY = {"name": "copy", "params": {"bits": 8, "min_length": 1, "max_length": 3}}
# random memory init: with the constant init and all-zero initial weightings every slot
# receives the same writes forever, so the memory would act as a single vector. The random
# init alone breaks that symmetry, so these recipes keep the zero initial weightings their
# committed checkpoints were trained with (new NTM configs default to learned ones)
NTM_SHORT = {"memory_slots": 16, "memory_width": 8, "memory_init": "random", "initial_weights": "zero"}
NTM_SHORT_TRAIN = {"steps": 3000, "batch_size": 16, "lr": 3e-3, "clip": 10.0, "eval_params": {"min_length": 3}}
RECALL = {"name": "associative_recall", "params": {"bits": 6, "item_length": 1, "min_items": 2, "max_items": 4}}
MQAR = {"name": "mqar", "params": {"vocab_size": 64, "seq_len": 64, "num_pairs": 8}}
MQAR_STACK = {"d_model": 32, "conv_size": 4, "chunk_size": 64, "blocks": ["memory", "mlp", "memory", "mlp"]}
MQAR_TRAIN = {"steps": 400, "batch_size": 32, "lr": 3e-3, "clip": None, "clip_norm": 1.0}
# one expert-choice slot memory (models/slot_memory.py) in place of the two linear-memory blocks
SLOT_MEMORY_STACK = {"d_model": 32, "conv_size": 4, "blocks": ["slot_memory", "mlp"], "slots": 32, "slot_top_k": 1,
                     "routing": "expert_choice", "slot_chunk_size": 8}
HYBRID = {"d_model": 32, "heads": 8, "conv_size": 4, "chunk_size": 64, "rule": "linear",
          "blocks": ["memory", "mlp", "attention", "mlp"]}  # memory first: attention-first hybrids train worse

# Hugging Face hybrids (models/hf.py, built by transformers from models/hf_configs/*.json), trained from
# scratch like `mnemoscope train --arch hf --hf-config FILE`: 4 layers of hidden 64, one of them softmax
# attention, on MQAR with 4 pairs (8 did not leave chance within the build's budget here)
HF_MQAR = {"name": "mqar", "params": {"vocab_size": 64, "seq_len": 64, "num_pairs": 4}}
HF_MQAR_TRAIN = {"steps": 600, "batch_size": 32, "lr": 3e-3, "min_lr": 3e-4, "clip": None, "clip_norm": 1.0}


def _hf(name: str) -> dict:
    from .hf import bundled_hf_config

    return {"hf_config": bundled_hf_config(name)}


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
        name="mqar-slot-memory",
        arch="sequence", config=SLOT_MEMORY_STACK, task=MQAR, train={**MQAR_TRAIN, "steps": 600},
        shows="MQAR with one slot-memory block written by expert choice (Zhou et al. 2022): each of 32 slots "
              "takes the top token of every 8-token chunk, and queries read the slots by content attention",
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
    Recipe(
        name="hf-qwen3-next-mqar",
        arch="hf", config=_hf("qwen3_next_tiny"), task=HF_MQAR, train=HF_MQAR_TRAIN,
        shows="a Qwen3-Next-style hybrid (transformers' Qwen3NextForCausalLM, models/hf_configs/qwen3_next_tiny.json): "
              "Gated DeltaNet layers 0, 1, 3 and full attention at layer 2, on MQAR (64 tokens, 4 pairs): "
              "which layers does recall need?",
    ),
    Recipe(
        name="hf-bamba-mqar",
        arch="hf", config=_hf("bamba_tiny"), task=HF_MQAR, train=HF_MQAR_TRAIN,
        shows="a Bamba-style hybrid (transformers' BambaForCausalLM, models/hf_configs/bamba_tiny.json): Mamba-2 "
              "layers 0, 1, 3 and attention at layer 2, on MQAR (64 tokens, 4 pairs)",
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

    unknown = sorted(set(recipe.remedies) - _KNOWN_REMEDIES)
    if unknown:
        raise ValueError(f"recipe {recipe.name!r}: unknown remedies {unknown}; known: {sorted(_KNOWN_REMEDIES)}")
    task = make_task(recipe.task)
    config = recipe.model_config(task)
    architecture(recipe.arch)(architecture(recipe.arch).Config(**config))
    allowed = {f.name for f in dataclasses.fields(TrainConfig)} - _BUILD_OPTIONS
    bad = sorted(set(recipe.train) - allowed)
    if bad:
        raise ValueError(f"recipe {recipe.name!r}: train options {bad} are not TrainConfig options "
                         f"a recipe sets; those are {sorted(allowed)}")
    if "steps" not in recipe.train:
        raise ValueError(f"recipe {recipe.name!r}: train needs steps")
    try:
        recipe.train_config()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"recipe {recipe.name!r}: {exc}") from exc
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


__all__ = ["Recipe", "RECIPES", "STUDIES", "recipes", "get_recipe", "check_recipe", "load_index", "zoo_files",
           "default_zoo_dir"]
