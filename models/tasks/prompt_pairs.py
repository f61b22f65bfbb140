"""Prompt pairs: a researcher's own clean/corrupted prompts for a language model.

A probe file is JSONL, one object a line:

    {"clean": [ids] | "text", "corrupted": [ids] | "text", "answer": id | "text",
     "corrupted_answer": id | "text"}                      # corrupted_answer optional

Token ids, or strings when a tokenizer is given (a `tokenizer.json`, loaded with the
`tokenizers` library, offline: `load_tokenizer`); an answer string must be one token.
The clean and corrupted prompts of a pair must have the same number of tokens:
patching swaps activations position by position, so position t must mean the same
thing in both (IOI-style pairs change a name, not the length). `parse_probe` turns a
file into pairs of ids with errors that name the line; the task keeps those pairs in
its params, so a spec rebuilds it anywhere (a server's worker process) without the file.
"""
from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import torch
from torch import Tensor

from . import register_task
from .base import Batch, PatchPair, TokenTask, generator
from .copy import _check_n, _differs
from .recall import MAX_VOCAB

MAX_PAIRS = 256  # lines of one probe: the pairs travel inside every job request that uses it
MAX_PROMPT_TOKENS = 256  # tokens of one prompt
PAD = 0  # id after a prompt's end (right padding: a causal model's scored position never sees it)
KEYS = ("clean", "corrupted", "answer", "corrupted_answer")


class ProbeError(ValueError):
    """A probe file or pair that cannot be used; the message names the line and the problem."""


def _token_id(value: Any, vocab_size: int | None, where: str) -> int:
    if isinstance(value, bool):
        raise ProbeError(f"{where}: a token id must be an integer, got {value!r}")
    try:
        token = operator.index(value)
    except TypeError:
        raise ProbeError(f"{where}: a token id must be an integer, got {value!r:.40}") from None
    limit = MAX_VOCAB if vocab_size is None else vocab_size
    if not 0 <= token < limit:
        raise ProbeError(f"{where}: token id {token} is outside the vocabulary (ids 0..{limit - 1})")
    return token


def _prompt(value: Any, vocab_size: int | None, where: str) -> list[int]:
    if not isinstance(value, list):
        raise ProbeError(f"{where}: a prompt must be a list of token ids, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_PROMPT_TOKENS:
        raise ProbeError(f"{where}: a prompt must have 1 to {MAX_PROMPT_TOKENS} tokens, got {len(value)}")
    return [_token_id(v, vocab_size, f"{where}[{i}]") for i, v in enumerate(value)]


def check_pair(pair: Any, vocab_size: int | None, where: str) -> dict:
    """One pair of token ids, checked and normalised: {"clean", "corrupted", "answer",
    "corrupted_answer" (None when not given)}. `vocab_size` None checks ids against MAX_VOCAB only."""
    if not isinstance(pair, dict):
        raise ProbeError(f"{where}: expected a JSON object with {', '.join(KEYS[:3])}, got {type(pair).__name__}")
    missing = [k for k in KEYS[:3] if k not in pair]
    if missing:
        raise ProbeError(f"{where}: missing {', '.join(missing)} (each line needs clean, corrupted and answer)")
    unknown = sorted(set(pair) - set(KEYS))
    if unknown:
        raise ProbeError(f"{where}: unknown keys {unknown}; a line has {', '.join(KEYS)} (the last optional)")
    clean = _prompt(pair["clean"], vocab_size, f"{where}: clean")
    corrupted = _prompt(pair["corrupted"], vocab_size, f"{where}: corrupted")
    if len(clean) != len(corrupted):
        raise ProbeError(f"{where}: clean has {len(clean)} tokens and corrupted {len(corrupted)}; they must have the "
                         "same number (patching swaps activations position by position)")
    answer = _token_id(pair["answer"], vocab_size, f"{where}: answer")
    other = pair.get("corrupted_answer")
    other = None if other is None else _token_id(other, vocab_size, f"{where}: corrupted_answer")
    return {"clean": clean, "corrupted": corrupted, "answer": answer, "corrupted_answer": other}


def load_tokenizer(path_or_json: str, *, from_text: bool = False):
    """A `tokenizers.Tokenizer` from a tokenizer.json file (or its text); nothing is downloaded."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # installed with transformers
        raise ProbeError(f"strings in a probe need the `tokenizers` package: {exc}") from exc
    try:
        return Tokenizer.from_str(path_or_json) if from_text else Tokenizer.from_file(path_or_json)
    except Exception as exc:  # noqa: BLE001 - the library reports a bad file in its own exception types
        raise ProbeError(f"the tokenizer.json could not be read: {str(exc)[:200]}") from exc


def _tokenize(pair: dict, tokenizer, where: str) -> dict:
    """The pair with its strings turned into token ids (no special tokens added)."""
    out = dict(pair)
    for key in KEYS:
        value = pair.get(key)
        if not isinstance(value, str):
            continue
        if tokenizer is None:
            raise ProbeError(f"{where}: {key} is a string, but there is no tokenizer.json to turn it into token "
                             "ids; give token ids, or upload the tokenizer with the probe")
        ids = tokenizer.encode(value, add_special_tokens=False).ids
        if key in ("answer", "corrupted_answer"):
            if len(ids) != 1:
                raise ProbeError(f"{where}: {key} {value!r} is {len(ids)} tokens {ids}; an answer must be one token")
            ids = ids[0]
        out[key] = ids
    return out


def parse_probe(lines: Iterable[str | bytes], vocab_size: int | None = None, tokenizer=None) -> list[dict]:
    """The pairs of a JSONL probe (an iterable of lines, e.g. an open file): each checked,
    strings tokenised with `tokenizer` when given. Blank lines are skipped; a ProbeError
    names the first bad line (1-based)."""
    pairs: list[dict] = []
    for number, raw in enumerate(lines, start=1):
        where = f"line {number}"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProbeError(f"{where}: not UTF-8 text") from None
        if not raw.strip():
            continue
        if len(pairs) >= MAX_PAIRS:
            raise ProbeError(f"{where}: a probe holds at most {MAX_PAIRS} pairs")
        try:
            obj = json.loads(raw, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ProbeError(f"{where}: not valid JSON ({exc})") from None
        if isinstance(obj, dict):
            obj = _tokenize(obj, tokenizer, where)
        pairs.append(check_pair(obj, vocab_size, where))
    if not pairs:
        raise ProbeError("the probe has no pairs (one JSON object a line)")
    return pairs


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass
class PromptPairsParams:
    """Not a `TaskParams` table: the pairs are data, not a number in a range. Checked here."""

    task_name: ClassVar[str] = "prompt_pairs"
    vocab_size: int = 0  # the model's vocabulary: no default fits every model
    pairs: list = field(default_factory=list)
    probe: str = ""  # where the pairs came from (a server's probe id), for people reading the spec

    def __post_init__(self) -> None:
        name = self.task_name
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or \
                not 2 <= self.vocab_size <= MAX_VOCAB:
            raise ValueError(f"{name}: vocab_size (the model's vocabulary) must be an integer in [2, {MAX_VOCAB}], "
                             f"got {self.vocab_size!r:.40}")
        if not isinstance(self.probe, str) or len(self.probe) > 200:
            raise ValueError(f"{name}: probe must be a string (a probe id) of at most 200 characters")
        if not isinstance(self.pairs, list) or not self.pairs:
            raise ValueError(f"{name}: pairs must be a non-empty list of {{clean, corrupted, answer}} objects "
                             "(a server fills them in from a probe id: params {\"probe\": \"<id>\"})")
        if len(self.pairs) > MAX_PAIRS:
            raise ValueError(f"{name}: at most {MAX_PAIRS} pairs, got {len(self.pairs)}")
        self.pairs = [check_pair(p, self.vocab_size, f"{name}: pair {i}") for i, p in enumerate(self.pairs)]


@register_task
class PromptPairs(TokenTask):
    """The probe's pairs as batches: a row is one prompt, right-padded with `PAD` to the
    longest prompt of the probe; the scored position is each prompt's last token, whose
    target is the answer (the corrupted batch's target is `corrupted_answer`, or the
    answer when the pair has none).

        clean      5  9  3  7 12 | answer 40         targets  .  .  .  .  40
        corrupted  5  9  3  8 12 | corrupted_answer 41       .  .  .  .  41

    `sample(n, seed)` is n pairs' clean prompts, the probe's pairs in a seeded order
    (cycled when n is more than the probe has). Metric: accuracy of the answer at the last
    position, higher is better; chance = 1/vocab_size. Patching scores the logit
    difference of the answer and the corrupted answer there, so it uses the pairs that
    have a `corrupted_answer` other than the answer.
    """

    name = "prompt_pairs"
    Params = PromptPairsParams

    def max_steps(self) -> int:
        return max(len(p["clean"]) for p in self.params.pairs)

    def _rows(self, n: int, seed: int) -> list[dict]:
        _check_n(n)
        order = torch.randperm(len(self.params.pairs), generator=generator(seed)).tolist()
        return [self.params.pairs[order[i % len(order)]] for i in range(n)]

    def _layout(self, rows: list[dict], prompt: str, answer: str) -> Batch:
        T = self.max_steps()
        B = len(rows)
        inputs = torch.full((B, T), PAD, dtype=torch.long)
        targets = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b, row in enumerate(rows):
            ids = row[prompt]
            inputs[b, : len(ids)] = torch.tensor(ids)
            last = len(ids) - 1
            target = row[answer] if row.get(answer) is not None else row["answer"]
            targets[b, last], mask[b, last] = target, True
        return Batch(inputs, targets, mask)

    def sample(self, n: int, seed: int) -> Batch:
        return self._layout(self._rows(n, seed), "clean", "answer")

    def patch_pairs(self, n: int, seed: int) -> PatchPair:
        """The probe's own pairs: clean is `sample(n, seed)`, corrupted the same rows'
        corrupted prompts; `differs` is the last position of the pairs whose answers differ."""
        rows = self._rows(n, seed)
        if not any(r["corrupted_answer"] is not None and r["corrupted_answer"] != r["answer"] for r in rows):
            raise ValueError(f"{self.name}: patching needs pairs with a corrupted_answer other than the answer "
                             "(the score is the logit difference between the two); none of these pairs has one")
        clean = self._layout(rows, "clean", "answer")
        corrupted = self._layout(rows, "corrupted", "corrupted_answer")
        return PatchPair(clean, corrupted, _differs(clean, corrupted))

    def position_roles(self, batch: Batch) -> Tensor:
        """`[B, T]` ids: prompt positions counted back from the scored last token (so the
        answer positions of prompts of different lengths align), then the padding."""
        B, T = batch.mask.shape
        t = torch.arange(T).expand(B, T)
        last = batch.mask.float().argmax(1, keepdim=True)
        return torch.where(t <= last, last - t, T + t - last - 1)

    def chance(self, batch: Batch | None = None) -> float:
        return 1.0 / self.params.vocab_size
