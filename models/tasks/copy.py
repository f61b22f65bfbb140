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


def _lengths(g: torch.Generator, n: int, low: int, high: int) -> Tensor:
    """`[n]` per-sequence lengths covering [low, high]: systematic sampling (a random offset,
    then evenly spaced), so a batch of n >= high-low+1 sequences holds every length, each
    n/(high-low+1) times up to one, in a random order. Unbiased: each length's expected
    share is the same as under uniform draws."""
    span = high - low + 1
    offset = torch.rand(1, generator=g, dtype=torch.float64)
    lengths = low + ((torch.arange(n, dtype=torch.float64) + offset) * span / n).floor().long().clamp(max=span - 1)
    return lengths[torch.randperm(n, generator=g)]


def _within(lengths: Tensor, L: int) -> Tensor:
    """`[B, L, 1]` 1.0 on each sequence's first `lengths[b]` rows, 0 after."""
    return (torch.arange(L)[None] < lengths[:, None]).float()[..., None]


def _roles(lengths: Tensor, mask: Tensor, end: Tensor | None = None) -> Tensor:
    """`[B, T]` position ids, equal where two sequences' positions play the same part:
    phase * T + ordinal, phases input row (ordinal = row), delimiter, output row (ordinal =
    output position), end marker (`end` `[B]`, repeat copy), padding."""
    B, T = mask.shape
    t = torch.arange(T).expand(B, T)
    L = lengths[:, None]
    phase = torch.where(t < L, 0, torch.where(t == L, 1, torch.where(mask, 2, 4)))
    ordinal = torch.where(t < L, t, torch.where(t == L, 0, t - L - 1))
    if end is not None:
        at_end = t == end[:, None]
        phase, ordinal = torch.where(at_end, 3, phase), torch.where(at_end, 0, ordinal)
    return phase * T + ordinal


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


def _redraw_one_row(g: torch.Generator, seq: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Copy of `seq` `[B, Lmax, bits]` with one row per sequence (below its own length
    `lengths` `[B]`) re-drawn so that at least one bit differs; also returns the row index `[B]`."""
    B, _, bits = seq.shape
    rows = (torch.rand(B, generator=g, dtype=torch.float64) * lengths).floor().long()
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
    mask is True on those L rows. L is drawn per sequence, so that a batch covers
    [min_length, max_length] (`_lengths`: every length n/(range) times, up to one);
    shorter sequences are padded at the end to T = 2*max(L)+1 (inputs, targets and mask
    zero there), which no causal model's scored outputs can see. min_length == max_length
    gives fixed-length batches in the pytorch-ntm layout, which the NTM importer relies on.

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
    `chance(batch)` uses that batch's lengths (their mean).

    `position_roles(batch)` `[B, T]` labels each position by what it is (input row k,
    the delimiter, output row k, padding), so analyses that swap values between sequences
    of different lengths swap like with like.
    """

    name = "copy"
    Params = CopyParams

    @property
    def input_size(self) -> int:
        return self.params.bits + 1

    @property
    def output_size(self) -> int:
        return self.params.bits

    def _sample(self, n: int, g: torch.Generator) -> tuple[Batch, Tensor, Tensor]:
        _check_n(n)
        p = self.params
        lengths = _lengths(g, n, p.min_length, p.max_length)  # [B]
        L = int(lengths.max())
        seq = _random_bits(g, n, L, p.bits) * _within(lengths, L)  # [B, L, bits], zero past each length
        return self._layout(seq, lengths), seq, lengths

    @staticmethod
    def steps(L: int) -> int:
        """T for a sequence of L rows: the rows, the delimiter, the rows again."""
        return 2 * L + 1

    def max_steps(self) -> int:
        return self.steps(self.params.max_length)

    def _layout(self, seq: Tensor, lengths: Tensor) -> Batch:
        B, L, bits = seq.shape
        T = self.steps(L)
        t = torch.arange(T)
        out_row = t[None] - lengths[:, None] - 1  # [B, T]: which input row output position t plays back
        mask = (out_row >= 0) & (out_row < lengths[:, None])
        inputs = torch.zeros(B, T, bits + 1)
        inputs[:, :L, :bits] = seq
        inputs[torch.arange(B), lengths, bits] = 1.0
        targets = seq.gather(1, out_row.clamp(0, L - 1)[..., None].expand(B, T, bits)) * mask[..., None]
        return Batch(inputs, targets, mask)

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, generator(seed))[0]

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """Clean is `sample(n, seed)`; corrupted re-draws one input row per sequence
        (at least one bit differs), so exactly the matching output row changes."""
        g = generator(seed)
        clean, seq, lengths = self._sample(n, g)
        corrupted = self._layout(_redraw_one_row(g, seq, lengths)[0], lengths)
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def position_roles(self, batch: Batch) -> Tensor:
        """`[B, T]` ids: input row k, the delimiter, output row k, padding (see `_roles`)."""
        lengths = batch.inputs[..., self.params.bits].argmax(1)  # the delimiter's position
        return _roles(lengths, batch.mask)

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
    The mask is True on those L*R + 1 rows. L and R are drawn per sequence, each covering
    its range (`_lengths`; R in an order of its own); shorter sequences are padded at the
    end to the batch's longest T (zero inputs, targets and mask).

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

    def _sample(self, n: int, g: torch.Generator) -> tuple[Batch, Tensor, Tensor, Tensor]:
        _check_n(n)
        p = self.params
        lengths = _lengths(g, n, p.min_length, p.max_length)  # [B]
        repeats = _lengths(g, n, p.min_repeats, p.max_repeats)  # [B]
        L = int(lengths.max())
        seq = _random_bits(g, n, L, p.bits) * _within(lengths, L)
        return self._layout(seq, lengths, repeats), seq, lengths, repeats

    @staticmethod
    def steps(L: int, R: int) -> int:
        """T for L rows repeated R times: the rows, the delimiter, R copies, the end marker."""
        return L + 1 + L * R + 1

    def max_steps(self) -> int:
        return self.steps(self.params.max_length, self.params.max_repeats)

    def _layout(self, seq: Tensor, lengths: Tensor, repeats: Tensor) -> Batch:
        B, Lmax, bits = seq.shape
        ends = lengths + 1 + lengths * repeats  # [B] each sequence's end-marker position
        T = int(ends.max()) + 1
        ar, t = torch.arange(B), torch.arange(T)[None]
        inputs = torch.zeros(B, T, bits + 2)
        inputs[:, :Lmax, :bits] = seq
        inputs[ar, lengths, bits] = 1.0
        inputs[ar, lengths, bits + 1] = repeats.float() / self.params.max_repeats
        out = t - lengths[:, None] - 1  # [B, T] output position
        data = (out >= 0) & (t < ends[:, None])
        row = torch.where(data, out, 0) % lengths[:, None]  # which input row it plays back
        targets = torch.zeros(B, T, bits + 1)
        targets[..., :bits] = seq.gather(1, row[..., None].expand(B, T, bits)) * data[..., None]
        targets[ar, ends, bits] = 1.0
        mask = (out >= 0) & (t <= ends[:, None])
        return Batch(inputs, targets, mask)

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, generator(seed))[0]

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """Clean is `sample(n, seed)`; corrupted re-draws one input row per sequence,
        so its R copies in the output change."""
        g = generator(seed)
        clean, seq, lengths, repeats = self._sample(n, g)
        corrupted = self._layout(_redraw_one_row(g, seq, lengths)[0], lengths, repeats)
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def position_roles(self, batch: Batch) -> Tensor:
        """`[B, T]` ids: input row k, the delimiter, output row k, the end marker, padding."""
        lengths = batch.inputs[..., self.params.bits].argmax(1)
        ends = batch.mask.shape[1] - 1 - batch.mask.flip(1).float().argmax(1)  # last scored position
        return _roles(lengths, batch.mask, ends)

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
