"""Copy and repeat-copy (Graves et al. 2014, "Neural Turing Machines", tasks 4.1 and 4.2).

Both store a random sequence of bit vectors and must play it back after a delimiter,
so every output bit depends on an input seen L or more steps earlier: a model that
solves them has to keep the sequence somewhere (memory, or a big enough state).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import register_task
from .base import Batch, BitsTask, PatchPair, generator
from .params import TaskParams, param

MAX_BITS = 1024  # bit channels per row; far beyond any model worth analysing
MAX_LENGTH = 1 << 16  # rows of one stored sequence


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of sequences) must be a positive int, got {n!r}")


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """One int uniformly from [low, high], inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=g).item())


def _random_bits(g: torch.Generator, *shape: int) -> Tensor:
    return torch.randint(0, 2, shape, generator=g).float()


def _nonzero_flips(g: torch.Generator, n: int, bits: int) -> Tensor:
    """`[n, bits]` random 0/1 masks, none all-zero: XOR-ing one onto a row re-draws it
    uniformly among the rows that differ from it."""
    flips = _random_bits(g, n, bits)
    while True:
        empty = flips.sum(-1) == 0
        if not empty.any():
            return flips
        flips[empty] = _random_bits(g, int(empty.sum()), bits)


def _redraw_one_row(g: torch.Generator, seq: Tensor) -> tuple[Tensor, Tensor]:
    """Copy of `seq` `[B, L, bits]` with one row per sequence re-drawn so that at least
    one bit differs; also returns the row index `[B]`."""
    B, L, bits = seq.shape
    rows = torch.randint(0, L, (B,), generator=g)
    new = seq.clone()
    ar = torch.arange(B)
    new[ar, rows] = (seq[ar, rows] + _nonzero_flips(g, B, bits)) % 2
    return new, rows


@dataclass
class CopyParams(TaskParams):
    bits: int = param(8, 1, MAX_BITS, "bit channels per row")
    min_length: int = param(1, 1, MAX_LENGTH, "shortest sequence L; one L per batch, uniform in the range")
    max_length: int = param(20, 1, MAX_LENGTH, "longest sequence L")


@register_task
class Copy(BitsTask):
    """Copy: read L random bit vectors, then a delimiter, then write them back.

    Input channels `bits + 1`: L rows of random bits (delimiter channel 0), one row
    with only the delimiter channel (index `bits`) set, then L rows of zeros; T = 2L+1.
    Targets `[B, T, bits]` are zero except the last L rows, which hold the bits; the
    mask is True on those L rows. One L per batch, drawn uniformly from
    [min_length, max_length] with the seeded generator (min_length == max_length gives
    fixed-length batches). This is the pytorch-ntm layout; the NTM importer relies on it.

    bits=3, L=2 (`.` = 0, `x` = mask on):

        t          0  1  2  3  4
        input  b0  1  0  .  .  .
               b1  0  1  .  .  .
               b2  1  1  .  .  .
               d   .  .  1  .  .
        target b0  .  .  .  1  0
               b1  .  .  .  0  1
               b2  .  .  .  1  1
        mask       .  .  .  x  x

    Metric: wrong bits per sequence, lower is better. `chance()` is L*bits/2 at the
    mean length (min+max)/2 (what an output ignoring the input gets on fair-coin bits);
    `chance(batch)` uses that batch's L.
    """

    name = "copy"
    Params = CopyParams

    @property
    def input_size(self) -> int:
        return self.params.bits + 1

    @property
    def output_size(self) -> int:
        return self.params.bits

    def _sample(self, n: int, g: torch.Generator) -> tuple[Batch, Tensor]:
        _check_n(n)
        p = self.params
        L = _randint(g, p.min_length, p.max_length)
        seq = _random_bits(g, n, L, p.bits)  # [B, L, bits]
        return self._layout(seq), seq

    @staticmethod
    def steps(L: int) -> int:
        """T for a sequence of L rows: the rows, the delimiter, the rows again."""
        return 2 * L + 1

    def max_steps(self) -> int:
        return self.steps(self.params.max_length)

    def _layout(self, seq: Tensor) -> Batch:
        B, L, bits = seq.shape
        T = self.steps(L)
        inputs = torch.zeros(B, T, bits + 1)
        inputs[:, :L, :bits] = seq
        inputs[:, L, bits] = 1.0
        targets = torch.zeros(B, T, bits)
        targets[:, L + 1 :] = seq
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, L + 1 :] = True
        return Batch(inputs, targets, mask)

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, generator(seed))[0]

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """Clean is `sample(n, seed)`; corrupted re-draws one input row per sequence
        (at least one bit differs), so exactly the matching output row changes."""
        g = generator(seed)
        clean, seq = self._sample(n, g)
        corrupted = self._layout(_redraw_one_row(g, seq)[0])
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def chance(self, batch: Batch | None = None) -> float:
        p = self.params
        if batch is not None:
            return float(batch.mask.sum(1).float().mean()) * p.bits / 2
        return (p.min_length + p.max_length) / 2 * p.bits / 2


@dataclass
class RepeatCopyParams(TaskParams):
    bits: int = param(8, 1, MAX_BITS, "bit channels per row")
    min_length: int = param(1, 1, MAX_LENGTH, "shortest sequence L; one L per batch, uniform in the range")
    max_length: int = param(10, 1, MAX_LENGTH, "longest sequence L")
    min_repeats: int = param(1, 1, MAX_LENGTH, "fewest repeats R; one R per batch, uniform in the range")
    max_repeats: int = param(5, 1, MAX_LENGTH, "most repeats R")


@register_task
class RepeatCopy(BitsTask):
    """Repeat copy: read L random bit vectors and a repeat count R, write the sequence
    R times, then an end marker.

    Input channels `bits + 2`: L rows of bits, then one row with the delimiter channel
    (index `bits`) set to 1 and the repeat channel (index `bits + 1`) set to
    R / max_repeats, then L*R + 1 rows of zeros; T = L + 1 + L*R + 1.
    Output channels `bits + 1`: the L*R rows after the delimiter hold the sequence R
    times over, and the last row has only the end-marker channel (index `bits`) set.
    The mask is True on those L*R + 1 rows. One L and one R per batch, each drawn
    uniformly from its range with the seeded generator.

    bits=2, L=2, R=2, max_repeats=4:

        t          0  1  2    3  4  5  6  7
        input  b0  1  0  .    .  .  .  .  .
               b1  1  1  .    .  .  .  .  .
               d   .  .  1    .  .  .  .  .
               r   .  .  0.5  .  .  .  .  .
        target b0  .  .  .    1  0  1  0  .
               b1  .  .  .    1  1  1  1  .
               end .  .  .    .  .  .  .  1
        mask       .  .  .    x  x  x  x  x

    Metric: wrong bits per sequence over all output channels, lower is better.
    `chance()` is E[L]*E[R]*bits/2 + 1: the all-zero output's expectation (fair-coin
    bits cost bits/2 per row whatever is guessed, and the end marker costs 1);
    `chance(batch)` uses that batch's L*R.
    """

    name = "repeat_copy"
    Params = RepeatCopyParams

    @property
    def input_size(self) -> int:
        return self.params.bits + 2

    @property
    def output_size(self) -> int:
        return self.params.bits + 1

    def _sample(self, n: int, g: torch.Generator) -> tuple[Batch, Tensor, int]:
        _check_n(n)
        p = self.params
        L = _randint(g, p.min_length, p.max_length)
        R = _randint(g, p.min_repeats, p.max_repeats)
        seq = _random_bits(g, n, L, p.bits)
        return self._layout(seq, R), seq, R

    @staticmethod
    def steps(L: int, R: int) -> int:
        """T for L rows repeated R times: the rows, the delimiter, R copies, the end marker."""
        return L + 1 + L * R + 1

    def max_steps(self) -> int:
        return self.steps(self.params.max_length, self.params.max_repeats)

    def _layout(self, seq: Tensor, R: int) -> Batch:
        B, L, bits = seq.shape
        T = self.steps(L, R)
        inputs = torch.zeros(B, T, bits + 2)
        inputs[:, :L, :bits] = seq
        inputs[:, L, bits] = 1.0
        inputs[:, L, bits + 1] = R / self.params.max_repeats
        targets = torch.zeros(B, T, bits + 1)
        targets[:, L + 1 : T - 1, :bits] = seq.repeat(1, R, 1)
        targets[:, T - 1, bits] = 1.0
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, L + 1 :] = True
        return Batch(inputs, targets, mask)

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, generator(seed))[0]

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """Clean is `sample(n, seed)`; corrupted re-draws one input row per sequence,
        so its R copies in the output change."""
        g = generator(seed)
        clean, seq, R = self._sample(n, g)
        corrupted = self._layout(_redraw_one_row(g, seq)[0], R)
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def chance(self, batch: Batch | None = None) -> float:
        p = self.params
        if batch is not None:
            data_rows = batch.mask.sum(1).float() - 1  # L*R per row
            return float(data_rows.mean()) * p.bits / 2 + 1
        mean_l = (p.min_length + p.max_length) / 2
        mean_r = (p.min_repeats + p.max_repeats) / 2
        return mean_l * mean_r * p.bits / 2 + 1


def _differs(clean: Batch, corrupted: Batch) -> Tensor:
    """`[B, T]` output positions whose correct answer differs."""
    t_clean, t_corr = clean.targets, corrupted.targets
    if t_clean.dim() == 3:
        return (t_clean != t_corr).any(-1) & clean.mask
    return (t_clean != t_corr) & clean.mask
