"""What every task provides: seeded batches, its loss, its own metric, clean/corrupted pairs."""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Batch:
    """inputs: `[B, T, input_size]` floats, or `[B, T]` token ids for token tasks.
    targets: `[B, T, output_size]` bits (0/1 floats) or `[B, T]` class ids.
    mask: `[B, T]` bool, the positions where loss and metric count.
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def select(self, rows) -> "Batch":
        return Batch(self.inputs[rows], self.targets[rows], self.mask[rows])

    def repeat(self, n: int) -> "Batch":
        """Each sequence n times in a row: rows [s0, s0, ..., s1, s1, ...]."""
        return Batch(*(v.repeat_interleave(n, dim=0) for v in (self.inputs, self.targets, self.mask)))

    def to(self, device) -> "Batch":
        return Batch(self.inputs.to(device), self.targets.to(device), self.mask.to(device))


@dataclass
class PatchPair:
    """Clean and corrupted batches of the same shape for activation patching.
    `differs` `[B, T]` marks the positions whose correct answer differs between them."""

    clean: Batch
    corrupted: Batch
    differs: Tensor


class Task:
    """Base class. Subclasses set `name`, `Params` (a dataclass of the task's knobs),
    `output_kind` and implement `sample`, `patch_pairs`, `metric_per_step`.

    The metric is the task's own (wrong bits per sequence for copy, accuracy on queried
    positions for recall); `higher_is_better` and `chance()` say how to read it.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = object
    output_kind: ClassVar[Literal["bits", "classes"]] = "bits"
    metric_name: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True

    def __init__(self, params=None, **kwargs):
        self.params = params if params is not None else self.Params(**kwargs)

    # -- sizes the model must match -------------------------------------------------------
    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int | None:
        """Number of token ids for token tasks, else None."""
        return None

    def max_steps(self) -> int:
        """The longest sequence (T) this task can produce with its parameters, computed
        from them alone: what a caller multiplies by batch size and model cost to bound
        a request before sampling anything."""
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------
    def sample(self, n: int, seed: int) -> Batch:
        raise NotImplementedError

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        raise NotImplementedError

    # -- scoring -------------------------------------------------------------------------
    def probs(self, logits: Tensor) -> Tensor:
        """Output probabilities: per-bit sigmoid or softmax over classes."""
        return torch.sigmoid(logits) if self.output_kind == "bits" else logits.softmax(-1)

    def loss_per_step(self, logits: Tensor, batch: Batch) -> Tensor:
        """`[B, T]` loss, zero where the mask is off."""
        if self.output_kind == "bits":
            loss = F.binary_cross_entropy_with_logits(logits, batch.targets.float(), reduction="none").sum(-1)
        else:
            loss = F.cross_entropy(logits.transpose(1, 2), batch.targets.long(), reduction="none")
        return loss * batch.mask

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        return self.loss_per_step(logits, batch).sum() / batch.mask.sum().clamp(min=1)

    def metric_per_step(self, logits: Tensor, batch: Batch) -> Tensor:
        """`[B, T]` contribution of each position to the metric (zero where masked)."""
        raise NotImplementedError

    def metric(self, logits: Tensor, batch: Batch) -> Tensor:
        """`[B]` metric per sequence."""
        raise NotImplementedError

    def chance(self, batch: Batch | None = None) -> float:
        """The metric's expected value for an output that ignores the input.

        Where it depends on the sequence length (wrong bits grow with the length), the
        default is for the mean of the length range and `chance(batch)` is for the
        lengths of that batch (averaged over its rows)."""
        raise NotImplementedError

    # -- description ----------------------------------------------------------------------
    def spec(self) -> dict:
        """JSON-able description; `make_task(spec)` rebuilds the task."""
        return {"name": self.name, "params": dataclasses.asdict(self.params)}


def generator(seed: int) -> torch.Generator:
    """The only source of randomness for task data: same seed, same batch, no global RNG."""
    try:
        value = operator.index(seed)  # ints, numpy ints, integer 0-d tensors
    except TypeError:
        raise ValueError(f"seed must be an integer, got {seed!r}") from None
    if isinstance(seed, bool) or not 0 <= value < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return torch.Generator().manual_seed(value)


class BitsTask(Task):
    """Bit-vector outputs scored by wrong bits per sequence (Graves 2014): a bit is
    predicted 1 where its logit is above 0 (probability above 0.5)."""

    output_kind = "bits"
    metric_name = "wrong_bits"
    higher_is_better = False

    def metric_per_step(self, logits: Tensor, batch: Batch) -> Tensor:
        wrong = ((logits > 0).float() != batch.targets.float()).sum(-1)  # [B, T]
        return wrong.float() * batch.mask

    def metric(self, logits: Tensor, batch: Batch) -> Tensor:
        return self.metric_per_step(logits, batch).sum(1)


class ClassesTask(Task):
    """Class outputs scored by accuracy on the masked positions of each sequence.
    `metric_per_step` is each position's share (1/#masked where right), so it sums to
    `metric`."""

    output_kind = "classes"
    metric_name = "accuracy"
    higher_is_better = True

    def metric_per_step(self, logits: Tensor, batch: Batch) -> Tensor:
        right = (logits.argmax(-1) == batch.targets.long()) & batch.mask  # [B, T]
        return right.float() / batch.mask.sum(1, keepdim=True).clamp(min=1)

    def metric(self, logits: Tensor, batch: Batch) -> Tensor:
        return self.metric_per_step(logits, batch).sum(1)


class TokenTask(ClassesTask):
    """Token ids in, next-token classes out over one vocabulary (`params.vocab_size`): the
    language-model tasks (mqar, induction, prompt_pairs)."""

    @property
    def input_size(self) -> int:
        return self.params.vocab_size

    @property
    def output_size(self) -> int:
        return self.params.vocab_size

    @property
    def vocab_size(self) -> int:
        return self.params.vocab_size
