"""Prompt-pair probes: a researcher's JSONL of clean/corrupted prompts, stored once and
named by id in the jobs that use it.

An upload is parsed in this process by the task's own strict parser
(`mnemoscope.models.tasks.prompt_pairs.parse_probe`): it is JSON, never pickle, and its
size is capped by the request-body limit (1 MiB) before a byte is parsed, its lines and
tokens by the parser. Strings are tokenised with a `tokenizer.json` uploaded beside it.
What is stored is the probe as token ids, one normalised JSON object a line, under the
sha256 of those bytes (the id is that hash's first hex digits, as for checkpoints).

A job names a probe as its task, `{"name": "prompt_pairs", "params": {"probe": "<id>"}}`;
`task_params` fills in the pairs and the model's vocabulary, so the normalised request
(and its result key) holds the pairs themselves and the worker rebuilds the task
without the store. A deleted probe therefore leaves its jobs' results intact.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from mnemoscope.models.tasks.prompt_pairs import MAX_PAIRS, MAX_PROMPT_TOKENS, ProbeError, load_tokenizer, parse_probe

from ..errors import Invalid, NotFound
from ..middleware import MAX_JSON_BODY
from ..store import Store, now
from .checkpoints import ID_LENGTH
from .uploads import sanitize_name

TASK = "prompt_pairs"


def get_or_404(store: Store, probe_id: str) -> dict:
    record = store.get_probe(probe_id)
    if record is None:
        raise NotFound(f"no probe with id {probe_id!r}; GET /api/probes lists them")
    return record


def ingest(store: Store, data: bytes, filename: str | None, name: str | None = None,
           tokenizer_json: bytes | None = None) -> tuple[dict, bool]:
    """Parse, normalise and store one probe file. Returns (record, created); a 422 names
    the line and the problem."""
    try:
        tokenizer = None
        if tokenizer_json:
            tokenizer = load_tokenizer(_text(tokenizer_json, "the tokenizer.json"), from_text=True)
        pairs = parse_probe(_text(data, "the probe").splitlines(), tokenizer=tokenizer)
    except ProbeError as exc:
        raise Invalid(f"probe {sanitize_name(filename, 'upload')}: {exc}") from None
    normalised = "".join(json.dumps(p, separators=(",", ":")) + "\n" for p in pairs).encode()
    sha256 = hashlib.sha256(normalised).hexdigest()
    ids = [t for p in pairs for key in ("clean", "corrupted") for t in p[key]]
    ids += [p[key] for p in pairs for key in ("answer", "corrupted_answer") if p[key] is not None]
    filename = sanitize_name(filename, "probe.jsonl")
    record = {
        "id": sha256[:ID_LENGTH],
        "sha256": sha256,
        "name": sanitize_name(name, filename.rsplit(".", 1)[0] or "probe"),
        "filename": filename,
        "pairs": len(pairs),
        "patchable": sum(p["corrupted_answer"] is not None and p["corrupted_answer"] != p["answer"] for p in pairs),
        "max_tokens": max(len(p["clean"]) for p in pairs),
        "max_id": max(ids),
        "tokenized": int(tokenizer is not None),
        "size_bytes": len(normalised),
        "created_at": now(),
    }
    return store.add_probe(normalised, record)


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProbeError(f"{what} is not UTF-8 text") from None


def read_pairs(store: Store, record: dict) -> list[dict]:
    """The stored pairs (written by `ingest`, parsed again: the file is the truth)."""
    with open(store.probe_path(record), encoding="utf-8") as f:
        return parse_probe(f)


def public(record: dict) -> dict:
    out = {k: record[k] for k in ("id", "name", "filename", "pairs", "patchable", "max_tokens", "max_id",
                                  "size_bytes", "created_at")}
    out["tokenized"] = bool(record["tokenized"])
    out["task"] = {"name": TASK, "params": {"probe": record["id"]}}  # what a job request names
    return out


def detail(store: Store, record: dict) -> dict:
    return {**public(record), "items": read_pairs(store, record)}


def task_params(store: Store | None, vocab: int | None, params: dict[str, Any]) -> dict[str, Any]:
    """A prompt_pairs task's params for a model of `vocab` token ids: a probe id becomes its
    pairs, and the vocabulary defaults to the model's."""
    params = dict(params)
    probe_id = params.get("probe")
    if probe_id is not None and "pairs" not in params:
        if not isinstance(probe_id, str):
            raise Invalid(f"task {TASK!r}: probe must be a probe id (a string), got {probe_id!r:.40}")
        if store is None:
            raise Invalid(f"task {TASK!r}: probes are read by jobs only (report, patching, ablations)")
        probe = store.get_probe(probe_id)
        if probe is None:
            raise Invalid(f"task {TASK!r}: no probe with id {probe_id!r}; GET /api/probes lists them, "
                          "POST /api/probes uploads one")
        if vocab is not None and probe["max_id"] >= int(vocab):
            raise Invalid(f"probe {probe_id!r} uses token ids up to {probe['max_id']}, but this model's vocabulary "
                          f"has {vocab} ids (0..{int(vocab) - 1}): was it written for another tokenizer?")
        params["pairs"] = read_pairs(store, probe)
    if "vocab_size" not in params and vocab is not None:
        params["vocab_size"] = int(vocab)
    return params


# what the route documents: the body cap is the middleware's, the rest the parser's
LIMITS = {"bytes": MAX_JSON_BODY, "pairs": MAX_PAIRS, "tokens_per_prompt": MAX_PROMPT_TOKENS}
