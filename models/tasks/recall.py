"""Associative recall (Graves et al. 2014) and multi-query associative recall (MQAR,
Arora et al. 2023, "Zoology").

Both store key -> value bindings and then ask for the value of a key seen earlier:
the answer cannot be computed from the query alone, only looked up.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import register_task
from .base import Batch, BitsTask, PatchPair, TokenTask, generator
from .copy import MAX_BITS, MAX_LENGTH, _check_n, _differs, _lengths, _random_bits
from .params import TaskParams, param

_MAX_REDRAWS = 10_000


MAX_ITEMS = 1024  # drawing K distinct items compares each with the ones before: K^2 work


@dataclass
class AssociativeRecallParams(TaskParams):
    bits: int = param(6, 1, MAX_BITS, "bit channels per item row")
    item_length: int = param(3, 1, MAX_LENGTH, "rows per item")
    min_items: int = param(2, 2, MAX_ITEMS, "fewest items K in the list; K drawn per sequence, covering the range")
    max_items: int = param(6, 2, MAX_ITEMS, "most items K in the list")

    def check(self) -> None:
        # items are kept distinct (a repeated item would make the query ambiguous) and
        # patching needs one more distinct item than the list holds: 2**(bits*item_length)
        # > max_items, compared through bit_length so a huge exponent is never computed
        width = self.bits * self.item_length
        if width < self.max_items.bit_length():
            raise ValueError(
                f"{self.task_name}: bits*item_length = {width} gives {2 ** width} distinct items, "
                f"need more than max_items = {self.max_items}"
            )


def _matches_any(candidate: Tensor, items: Tensor) -> Tensor:
    """`[B]` whether `candidate` `[B, IL, bits]` equals any of `items` `[B, K, IL, bits]`."""
    return (items == candidate[:, None]).flatten(2).all(-1).any(-1)


@register_task
class AssociativeRecall(BitsTask):
    """Associative recall: a list of K items, then one of them as a query; answer with
    the item that followed it in the list.

    Input channels `bits + 2`. Each item is `item_length` rows of random bits preceded
    by a delimiter row (channel `bits`). Then a query delimiter row (channel `bits + 1`),
    a copy of item q, another query delimiter row, and `item_length` rows of zeros
    during which the target is item q+1. A sequence of K items has
    T_K = K*(item_length+1) + 2 + 2*item_length steps; targets `[B, T, bits]`, mask True
    on its last `item_length` rows. K is drawn per sequence so that a batch covers
    [min_items, max_items] (copy's `_lengths`: every count n/(range) times, up to one);
    shorter sequences are padded at the end to T = T_max(K) (inputs, targets and mask zero
    there), which no causal model's scored outputs can see. q is uniform in [0, K-2] per
    sequence. Items in a sequence are distinct.

    bits=2, item_length=1, K=3, q=0 (item 0 = 10, item 1 = 01, item 2 = 11):

        t          0  1  2  3  4  5  6  7  8  9
        input  b0  .  1  .  0  .  1  .  1  .  .
               b1  .  0  .  1  .  1  .  0  .  .
               d   1  .  1  .  1  .  .  .  .  .
               q   .  .  .  .  .  .  1  .  1  .
        target b0  .  .  .  .  .  .  .  .  .  0
               b1  .  .  .  .  .  .  .  .  .  1
        mask       .  .  .  .  .  .  .  .  .  x

    Metric: wrong bits per sequence, lower is better; chance = item_length*bits/2.
    """

    name = "associative_recall"
    Params = AssociativeRecallParams

    @property
    def input_size(self) -> int:
        return self.params.bits + 2

    @property
    def output_size(self) -> int:
        return self.params.bits

    def _draw_item(self, g: torch.Generator, n: int) -> Tensor:
        return _random_bits(g, n, self.params.item_length, self.params.bits)

    def _distinct_items(self, g: torch.Generator, n: int, K: int) -> Tensor:
        """`[n, K, item_length, bits]`, all items of a sequence different."""
        items = torch.stack([self._draw_item(g, n) for _ in range(K)], dim=1)
        for k in range(1, K):
            for _ in range(_MAX_REDRAWS):
                clash = _matches_any(items[:, k], items[:, :k])
                if not clash.any():
                    break
                items[clash, k] = self._draw_item(g, int(clash.sum()))
            else:
                raise RuntimeError("associative_recall: could not draw distinct items")
        return items

    def _sample(self, n: int, g: torch.Generator) -> tuple[Batch, Tensor, Tensor, Tensor]:
        _check_n(n)
        p = self.params
        counts = _lengths(g, n, p.min_items, p.max_items)  # [B] items per sequence
        items = self._distinct_items(g, n, int(counts.max()))  # past a sequence's count: unused
        q = (torch.rand(n, generator=g, dtype=torch.float64) * (counts - 1)).floor().long()  # [0, K-2]
        return self._layout(items, q, counts), items, q, counts

    @staticmethod
    def steps(K: int, item_length: int) -> int:
        """T for K items: each with its delimiter, two query delimiters, the query, the answer rows."""
        return K * (item_length + 1) + 2 + 2 * item_length

    def max_steps(self) -> int:
        return self.steps(self.params.max_items, self.params.item_length)

    def _layout(self, items: Tensor, q: Tensor, counts: Tensor) -> Batch:
        """Sequence b lists its first `counts[b]` items, then queries item q[b]."""
        B, _, IL, bits = items.shape
        T = self.steps(int(counts.max()), IL)
        ar = torch.arange(B)
        t = torch.arange(T)[None]  # [1, T]
        qs = counts[:, None] * (IL + 1)  # [B, 1] first query delimiter
        listed = t < qs
        slot, row = (t // (IL + 1)).clamp(max=items.shape[1] - 1), t % (IL + 1)  # item and row within it
        inputs = torch.zeros(B, T, bits + 2)
        inputs[..., bits] = (listed & (row == 0)).float()
        item_rows = items[ar[:, None], slot.expand(B, T), (row - 1).clamp(min=0).expand(B, T)]  # [B, T, bits]
        inputs[..., :bits] = item_rows * (listed & (row > 0))[..., None]
        inputs[..., bits + 1] = ((t == qs) | (t == qs + 1 + IL)).float()
        in_query = (t > qs) & (t <= qs + IL)
        query_rows = items[ar, q][ar[:, None], (t - qs - 1).clamp(0, IL - 1)]  # [B, T, bits]
        inputs[..., :bits] += query_rows * in_query[..., None]
        end = qs + 2 + 2 * IL  # [B, 1] each sequence's own T
        mask = (t >= end - IL) & (t < end)
        answer = items[ar, q + 1][ar[:, None], (t - (end - IL)).clamp(0, IL - 1)]
        targets = answer * mask[..., None]
        return Batch(inputs, targets, mask)

    def position_roles(self, batch: Batch) -> Tensor:
        """`[B, T]` ids, equal where two sequences' positions play the same part: list row
        t (phase 0), then the query section counted from its first delimiter (phase 1, so
        queries and answers align across item counts), then padding (phase 2)."""
        B, T = batch.mask.shape
        t = torch.arange(T).expand(B, T)
        qs = batch.inputs[..., self.params.bits + 1].argmax(1, keepdim=True)  # first query delimiter
        end = qs + 2 + 2 * self.params.item_length
        phase = torch.where(t < qs, 0, torch.where(t < end, 1, 2))
        ordinal = torch.where(t < qs, t, torch.where(t < end, t - qs, t - end))
        return phase * T + ordinal

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, generator(seed))[0]

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """Clean is `sample(n, seed)`; corrupted replaces the answer item (item q+1) in
        the list by a new item distinct from every item of the sequence, so the query
        is unchanged and the answer changes."""
        g = generator(seed)
        clean, items, q, counts = self._sample(n, g)
        ar = torch.arange(n)
        new = self._draw_item(g, n)
        for _ in range(_MAX_REDRAWS):
            clash = _matches_any(new, items)
            if not clash.any():
                break
            new[clash] = self._draw_item(g, int(clash.sum()))
        else:
            raise RuntimeError("associative_recall: could not draw a distinct replacement item")
        changed = items.clone()
        changed[ar, q + 1] = new
        corrupted = self._layout(changed, q, counts)
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def chance(self, batch: Batch | None = None) -> float:
        return self.params.item_length * self.params.bits / 2


FILLER = 0  # the default token id of every non-pair, non-query position; never a key or a value


# token ids; the one-hot inputs and the logits are this wide. Large enough for the vocabularies
# of language models (Qwen's 151,936, Gemma's 256,000), whose tokens MQAR can draw from a range of.
MAX_VOCAB = 1 << 18


RANGE_PARAMS = ("id_low", "id_high", "filler")  # MQAR over a chosen range of a big vocabulary


@dataclass
class MQARParams(TaskParams):
    vocab_size: int = param(64, 4, MAX_VOCAB, "token ids: keys below vocab_size/2, values from it on")
    seq_len: int = param(64, 4, MAX_LENGTH, "tokens per sequence, the sequence length T")
    num_pairs: int = param(8, 1, MAX_LENGTH // 4, "key-value pairs per sequence, each queried once")
    # p(gap) ~ (gap+1)^(power_a - 1). Below 1e-3 the law is 1/(gap+1) to within about 1% for any
    # seq_len here, so smaller values only look different; above 16 the last gaps take
    # nearly all the mass, and past ~60 the weights overflow float64 (torch.multinomial fails).
    power_a: float = param(0.01, 1e-3, 16.0, "power law of the query gaps: small puts queries near the pairs, 1 is uniform")
    # A language model's vocabulary is mostly ids the task should not touch (special tokens,
    # byte pieces): keys and values can come from one chosen range of it instead of all of it.
    id_low: int = param(0, 0, MAX_VOCAB - 1, "first token id keys and values are drawn from (keys the lower half of the range, values the upper)")
    id_high: int = param(0, 0, MAX_VOCAB, "one past the last token id drawn from; 0: vocab_size")
    filler: int = param(FILLER, 0, MAX_VOCAB - 1, "token id of every non-pair, non-query position; never a key or a value")

    @property
    def id_end(self) -> int:
        """One past the last id of the range (id_high, or vocab_size when id_high is 0)."""
        return self.id_high or self.vocab_size

    @property
    def id_middle(self) -> int:
        """Keys are below it, values from it on."""
        return (self.id_low + self.id_end) // 2

    def key_ids(self) -> Tensor:
        """The ids keys are drawn from: the lower half of the range, less the filler."""
        ids = torch.arange(self.id_low, self.id_middle)
        return ids[ids != self.filler]

    def value_ids(self) -> Tensor:
        """The ids values are drawn from: the upper half of the range, less the filler."""
        ids = torch.arange(self.id_middle, self.id_end)
        return ids[ids != self.filler]

    def check(self) -> None:
        n, V = self.num_pairs, self.vocab_size
        if self.id_end > V:
            raise ValueError(f"{self.task_name}: id_high {self.id_end} is past vocab_size {V} (ids are 0..{V - 1})")
        if self.filler >= V:
            raise ValueError(f"{self.task_name}: filler {self.filler} is not a token id of vocab_size {V}")
        if self.id_low >= self.id_end:
            raise ValueError(f"{self.task_name}: id_low ({self.id_low}) must be below id_high ({self.id_end})")
        keys, values = len(self.key_ids()), len(self.value_ids())
        if keys < n:
            raise ValueError(
                f"{self.task_name}: vocab_size {V} gives {keys} keys (ids {self.id_low}..{self.id_middle - 1}, less the filler {self.filler}), "
                f"fewer than num_pairs = {n}"
            )
        if values <= n:
            raise ValueError(
                f"{self.task_name}: vocab_size {V} gives {values} values (ids {self.id_middle}..{self.id_end - 1}, "
                f"less the filler), need more than num_pairs = {n} (one spare for patching)"
            )
        if self.seq_len < 4 * n:
            raise ValueError(
                f"{self.task_name}: seq_len must be at least 4*num_pairs = {4 * n} (pairs plus one query slot per key), got {self.seq_len}"
            )


@register_task
class MQAR(TokenTask):
    """Multi-query associative recall (Zoology's `multiquery_ar`).

    Token ids `[B, T]`, T = seq_len. Keys are drawn without replacement from ids
    [1, vocab/2), values without replacement from [vocab/2, vocab), so the halves are
    disjoint; id 0 (`FILLER`) fills every other position (Zoology's
    `random_non_queries=False`). For a language model's vocabulary, `id_low`/`id_high`
    narrow the ids to one range [id_low, id_high) (keys its lower half, values its upper
    half) and `filler` sets the filler id, which is never a key or a value; the defaults
    are the layout above, batch for batch. The first 2*num_pairs positions are k v k v ...; then
    every key appears once more as a query, at position 2*num_pairs + 2*gap, the gaps
    drawn without replacement from [0, (seq_len - 2*num_pairs)//2) with
    p(gap) ~ power_a * (gap+1)^(power_a - 1) (power_a = 0.01 puts most queries near
    the pairs; 1 makes them uniform). As in Zoology the target sits on the query
    position itself: the logits there must predict the key's value. Targets are 0 and
    the mask False everywhere else.

    vocab_size=12, seq_len=16, num_pairs=2:

                  key val key val          query                   query
        inputs     2   8   4   7   0   0   4   0   0   0   0   0   2   0   0   0
        targets    .   .   .   .   .   .   7   .   .   .   .   .   8   .   .   .
        mask       .   .   .   .   .   .   x   .   .   .   .   .   x   .   .   .

    Metric: accuracy on the queried positions of each sequence, higher is better;
    chance = 1/(number of values) = 1/(vocab/2): a guess among the values (the values of
    the id range, when one is set).
    """

    name = "mqar"
    Params = MQARParams

    def max_steps(self) -> int:
        return self.params.seq_len

    def _sample(self, n: int, g: torch.Generator) -> tuple[Batch, Tensor, Tensor, Tensor]:
        _check_n(n)
        p = self.params
        key_ids, value_ids, k = p.key_ids(), p.value_ids(), p.num_pairs
        # draws of the same shapes in the same order whatever the range, so the default
        # range gives the batches it always gave
        keys = key_ids[torch.rand(n, len(key_ids), generator=g).argsort(-1)[:, :k]]
        values = value_ids[torch.rand(n, len(value_ids), generator=g).argsort(-1)[:, :k]]
        space = (p.seq_len - 2 * k) // 2
        weights = p.power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (p.power_a - 1)
        gaps = torch.multinomial(weights.expand(n, space), k, replacement=False, generator=g)
        positions = 2 * k + 2 * gaps  # [B, k]: query of keys[:, i] at positions[:, i]
        return self._layout(keys, values, positions), keys, values, positions

    def _layout(self, keys: Tensor, values: Tensor, positions: Tensor) -> Batch:
        B, k = keys.shape
        T = self.params.seq_len
        inputs = torch.full((B, T), self.params.filler, dtype=torch.long)
        inputs[:, 0 : 2 * k : 2] = keys
        inputs[:, 1 : 2 * k : 2] = values
        inputs.scatter_(1, positions, keys)
        targets = torch.zeros(B, T, dtype=torch.long).scatter_(1, positions, values)
        mask = torch.zeros(B, T, dtype=torch.bool).scatter_(1, positions, True)
        return Batch(inputs, targets, mask)

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, generator(seed))[0]

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """Clean is `sample(n, seed)`; corrupted gives one key per sequence a new value,
        unused elsewhere in the sequence, so only that pair's value token changes in
        the input and the answer at every query of that key differs."""
        g = generator(seed)
        clean, keys, values, positions = self._sample(n, g)
        value_ids = self.params.value_ids()
        which = torch.randint(0, self.params.num_pairs, (n,), generator=g)
        scores = torch.rand(n, len(value_ids), generator=g)
        scores.scatter_(1, torch.searchsorted(value_ids, values), -1.0)  # uniform among the unused values
        changed = values.clone()
        changed[torch.arange(n), which] = value_ids[scores.argmax(-1)]
        corrupted = self._layout(keys, changed, positions)
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def position_roles(self, batch: Batch) -> Tensor:
        """`[B, T]` ids, equal where two sequences' positions play the same part: the
        pairs' positions as they are (key i, value i), the k-th query in time with the
        k-th query, the k-th filler with the k-th filler. Swapping values between
        sequences at the same timestep would put a filler's value where a query asks."""
        B, T = batch.mask.shape
        t = torch.arange(T).expand(B, T)
        pairs = t < 2 * self.params.num_pairs
        query = batch.mask & ~pairs
        filler = ~pairs & ~query
        phase = torch.where(pairs, 0, torch.where(query, 1, 2))
        ordinal = torch.where(pairs, t, torch.where(query, query.long().cumsum(1) - 1, filler.long().cumsum(1) - 1))
        return phase * T + ordinal

    def chance(self, batch: Batch | None = None) -> float:
        return 1.0 / len(self.params.value_ids())

    def spec(self) -> dict:
        """The id-range parameters appear only when set: a spec from before they existed,
        and the server's result keys made from it, stay what they were."""
        spec = super().spec()
        defaults = MQARParams()
        for name in RANGE_PARAMS:
            if spec["params"][name] == getattr(defaults, name):
                del spec["params"][name]
        return spec
