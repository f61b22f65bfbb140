"""Induction: a random token sequence, then the same sequence again (Olsson et al. 2022,
"In-context learning and induction heads").

On the repeat every next token is the one that followed the current token the first
time, so it can be predicted only by finding that earlier occurrence: the classic recall
test of a language model, over any range of its vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import register_task
from .base import Batch, PatchPair, TokenTask, generator
from .copy import MAX_LENGTH, _check_n, _differs
from .params import TaskParams, param
from .recall import MAX_VOCAB


@dataclass
class InductionParams(TaskParams):
    vocab_size: int = param(64, 3, MAX_VOCAB, "token ids of the model (its embedding and logits)")
    length: int = param(16, 2, MAX_LENGTH // 2, "tokens L of the random sequence; it is then repeated once, T = 2L")
    id_low: int = param(0, 0, MAX_VOCAB - 1, "first token id the sequence is drawn from")
    id_high: int = param(0, 0, MAX_VOCAB, "one past the last token id drawn from; 0: vocab_size")

    @property
    def id_end(self) -> int:
        return self.id_high or self.vocab_size

    def check(self) -> None:
        if self.id_end > self.vocab_size:
            raise ValueError(f"{self.task_name}: id_high {self.id_end} is past vocab_size {self.vocab_size} "
                             f"(ids are 0..{self.vocab_size - 1})")
        span = self.id_end - self.id_low
        # tokens are distinct (a repeated token would have two continuations), and patching
        # swaps one for an id the sequence does not hold: the range needs length + 1 ids
        if span <= self.length:
            raise ValueError(f"{self.task_name}: the id range {self.id_low}..{self.id_end - 1} holds {max(span, 0)} ids; "
                             f"need more than length = {self.length} (distinct tokens, plus one spare for patching)")


@register_task
class Induction(TokenTask):
    """A random sequence of `length` distinct token ids from [id_low, id_high), then the
    same sequence again; T = 2L. Each position of the repeat predicts the next token
    (targets[t] = inputs[t+1]); the scored positions are the repeat's first L-1 (its last
    token has no next one, and the first half's next tokens cannot be known).

    length=4, ids 10..19:

        t          0   1   2   3   4   5   6   7
        inputs    13  17  11  19  13  17  11  19
        targets    .   .   .   .  17  11  19   .
        mask       .   .   .   .   x   x   x   .

    Metric: accuracy on the repeat, higher is better; the loss on the repeat is the task's
    `loss`. chance = 1/(ids in the range): a guess that ignores the sequence.
    """

    name = "induction"
    Params = InductionParams

    def max_steps(self) -> int:
        return 2 * self.params.length

    def _sample(self, n: int, g: torch.Generator) -> tuple[Batch, Tensor]:
        _check_n(n)
        p = self.params
        span = p.id_end - p.id_low
        # the first L+1 of a random order: L distinct tokens and a spare one for patching
        drawn = torch.rand(n, span, generator=g).argsort(-1)[:, : p.length + 1] + p.id_low
        return self._layout(drawn[:, : p.length]), drawn[:, p.length]

    def _layout(self, tokens: Tensor) -> Batch:
        B, L = tokens.shape
        inputs = torch.cat([tokens, tokens], dim=1)
        mask = torch.zeros(B, 2 * L, dtype=torch.bool)
        mask[:, L : 2 * L - 1] = True
        targets = torch.zeros(B, 2 * L, dtype=torch.long)
        targets[:, L : 2 * L - 1] = tokens[:, 1:]
        return Batch(inputs, targets, mask)

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, generator(seed))[0]

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """Clean is `sample(n, seed)`; corrupted replaces one token j >= 1 of the sequence,
        in both halves, by an id the sequence does not hold, so it is still a repeated
        sequence and exactly one answer of the repeat changes (at t = L+j-1)."""
        g = generator(seed)
        clean, spare = self._sample(n, g)
        L = self.params.length
        tokens = clean.inputs[:, :L].clone()
        which = torch.randint(1, L, (n,), generator=g)
        tokens[torch.arange(n), which] = spare
        corrupted = self._layout(tokens)
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def position_roles(self, batch: Batch) -> Tensor:
        """Every sequence has the same layout: a position's role is its timestep."""
        B, T = batch.mask.shape
        return torch.arange(T).expand(B, T)

    def chance(self, batch: Batch | None = None) -> float:
        return 1.0 / (self.params.id_end - self.params.id_low)
