"""What every task provides: seeded batches, its loss, its own metric, clean/corrupted pairs."""
from __future__ import annotations

import dataclasses
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

    def chance(self) -> float:
        """The metric's expected value for an output that ignores the input."""
        raise NotImplementedError

    # -- description ----------------------------------------------------------------------
    def spec(self) -> dict:
        """JSON-able description; `make_task(spec)` rebuilds the task."""
        return {"name": self.name, "params": dataclasses.asdict(self.params)}
