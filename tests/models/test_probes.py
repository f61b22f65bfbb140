"""Probes for any language model's vocabulary: MQAR over a chosen id range, induction,
and prompt pairs from a researcher's JSONL (token ids, or strings through a tokenizer.json)."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from mnemoscope.models.tasks import make_task
from mnemoscope.models.tasks.prompt_pairs import MAX_PAIRS, MAX_PROMPT_TOKENS, ProbeError, load_tokenizer, parse_probe


def digest(*batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        for t in (b.inputs, b.targets, b.mask):
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def perfect_logits(task, batch):
    return torch.nn.functional.one_hot(batch.targets, task.output_size).float() * 20 - 10


# -- MQAR over token ids ------------------------------------------------------------------

# sample(8, seed=3) and patch_pairs(8, seed=5) (clean, corrupted, differs) digests, computed
# with the code before the id-range parameters existed: the defaults must keep giving them.
MQAR_BEFORE = [
    ({}, "9576f5d288ced84e", "045ff44a453d85b5", "4163887e6bfc497f", "9e3c3d87c95e107f"),
    ({"vocab_size": 32, "seq_len": 40, "num_pairs": 4, "power_a": 0.5},
     "c059fc87ce2a069f", "89d39c222cb540a7", "8e9d48d0b25cba3c", "681b6db7ee0bb8ee"),
    ({"vocab_size": 1000, "seq_len": 128, "num_pairs": 16},
     "742842b5c0696fbc", "a98699e68257fcf3", "ecced87b4aabb33c", "2723ab2b13a783fc"),
]


@pytest.mark.parametrize("params, sample, clean, corrupted, differs", MQAR_BEFORE)
def test_mqar_defaults_give_the_batches_they_gave_before(params, sample, clean, corrupted, differs):
    task = make_task("mqar", **params)
    pair = task.patch_pairs(8, seed=5)
    assert digest(task.sample(8, seed=3)) == sample
    assert (digest(pair.clean), digest(pair.corrupted)) == (clean, corrupted)
    assert hashlib.sha256(pair.differs.numpy().tobytes()).hexdigest()[:16] == differs
    # and the spec is the one stored in checkpoints (and server result keys) before
    assert set(task.spec()["params"]) == {"vocab_size", "seq_len", "num_pairs", "power_a"}


def test_mqar_draws_keys_and_values_from_the_id_range():
    task = make_task("mqar", vocab_size=50_000, seq_len=64, num_pairs=8, id_low=1000, id_high=2000, filler=7)
    batch = task.sample(32, seed=0)
    pairs = batch.inputs[:, :16]
    keys, values = pairs[:, 0::2], pairs[:, 1::2]
    assert ((keys >= 1000) & (keys < 1500)).all() and ((values >= 1500) & (values < 2000)).all()
    rest = batch.inputs[:, 16:][~batch.mask[:, 16:]]
    assert (rest == 7).all()  # the filler everywhere else
    assert ((batch.targets[batch.mask] >= 1500) & (batch.targets[batch.mask] < 2000)).all()
    assert task.chance() == pytest.approx(1 / 500)
    pair = task.patch_pairs(32, seed=1)
    changed = pair.corrupted.inputs[pair.corrupted.inputs != pair.clean.inputs]
    assert ((changed >= 1500) & (changed < 2000)).all() and pair.differs.any(1).all()
    assert make_task(task.spec()).spec() == task.spec()


def test_mqar_filler_inside_the_range_is_never_a_key_or_value():
    task = make_task("mqar", vocab_size=40, seq_len=32, num_pairs=4, id_low=10, id_high=20, filler=12)
    batch = task.sample(64, seed=2)
    pairs = batch.inputs[:, :8]
    assert not (pairs == 12).any()
    assert task.chance() == pytest.approx(1 / 5)  # values 15..19


@pytest.mark.parametrize("params, message", [
    ({"vocab_size": 100, "id_high": 200}, "id_high 200 is past vocab_size 100"),
    ({"id_low": 40, "id_high": 30}, r"id_low \(40\) must be below id_high \(30\)"),
    ({"filler": 64}, "filler 64 is not a token id of vocab_size 64"),
    ({"vocab_size": 5000, "id_low": 1000, "id_high": 1010}, "gives 5 keys .* fewer than num_pairs = 8"),
    ({"vocab_size": 5000, "id_low": 1000, "id_high": 1016}, "gives 8 values"),  # 8 pairs need a spare value
])
def test_mqar_range_errors_say_what_is_wrong(params, message):
    with pytest.raises(ValueError, match=message):
        make_task("mqar", **params)


# -- induction ------------------------------------------------------------------------------


def test_induction_layout_scores_the_repeat():
    task = make_task("induction", vocab_size=50_000, length=12, id_low=1000, id_high=1100)
    batch = task.sample(16, seed=0)
    L = 12
    assert batch.inputs.shape == (16, 2 * L) == (16, task.max_steps())
    assert torch.equal(batch.inputs[:, :L], batch.inputs[:, L:])
    first = batch.inputs[:, :L]
    assert ((first >= 1000) & (first < 1100)).all()
    assert all(len(set(row.tolist())) == L for row in first)  # distinct: one continuation each
    expected_mask = torch.zeros(2 * L, dtype=torch.bool)
    expected_mask[L : 2 * L - 1] = True
    assert torch.equal(batch.mask, expected_mask.expand(16, -1))
    assert torch.equal(batch.targets[:, L : 2 * L - 1], batch.inputs[:, L + 1 :])  # the next token
    assert task.chance() == pytest.approx(1 / 100)
    assert task.metric(perfect_logits(task, batch), batch).tolist() == [1.0] * 16
    uniform = torch.zeros(16, 2 * L, task.output_size)
    assert task.loss(uniform, batch).item() == pytest.approx(torch.log(torch.tensor(50_000.0)).item(), rel=1e-5)


def test_induction_patch_pair_changes_one_token_and_one_answer():
    task = make_task("induction", vocab_size=64, length=8)
    pair = task.patch_pairs(32, seed=3)
    L = 8
    assert torch.equal(pair.clean.inputs, task.sample(32, seed=3).inputs)
    diff = pair.clean.inputs != pair.corrupted.inputs
    assert (diff.sum(1) == 2).all() and torch.equal(diff[:, :L], diff[:, L:])  # the same token in both halves
    assert (pair.differs.sum(1) == 1).all()
    j = diff[:, :L].float().argmax(1)
    assert (j >= 1).all()
    assert torch.equal(pair.differs.float().argmax(1), L + j - 1)  # the position that predicts token j
    assert all(len(set(row.tolist())) == L for row in pair.corrupted.inputs[:, :L])


@pytest.mark.parametrize("params, message", [
    ({"vocab_size": 64, "length": 16, "id_low": 50, "id_high": 60}, "holds 10 ids; need more than length = 16"),
    ({"vocab_size": 64, "id_high": 65}, "id_high 65 is past vocab_size 64"),
    ({"length": 1}, r"length must be an integer in \[2,"),
])
def test_induction_errors(params, message):
    with pytest.raises(ValueError, match=message):
        make_task("induction", **params)


# -- prompt pairs ---------------------------------------------------------------------------

LINES = [
    json.dumps({"clean": [5, 9, 3, 7], "corrupted": [5, 9, 3, 8], "answer": 40, "corrupted_answer": 41}),
    "",
    json.dumps({"clean": [1, 2], "corrupted": [1, 3], "answer": 4}),
    json.dumps({"clean": [11, 12, 13], "corrupted": [14, 12, 13], "answer": 20, "corrupted_answer": 21}),
]


def probe_task(lines=LINES, vocab_size=64):
    return make_task({"name": "prompt_pairs", "params": {"vocab_size": vocab_size, "pairs": parse_probe(lines)}})


def test_prompt_pairs_batches_score_the_last_token():
    task = probe_task()
    batch = task.sample(6, seed=0)  # 3 pairs, cycled in a seeded order
    assert batch.inputs.shape == (6, 4) and task.max_steps() == 4
    assert batch.mask.sum(1).tolist() == [1] * 6
    for row in range(6):
        last = int(batch.mask[row].float().argmax())
        prompt = batch.inputs[row, : last + 1].tolist()
        pair = next(p for p in task.params.pairs if p["clean"] == prompt)
        assert batch.targets[row, last] == pair["answer"] and (batch.inputs[row, last + 1 :] == 0).all()
    assert sorted(map(tuple, batch.inputs[:3].tolist())) == sorted(map(tuple, batch.inputs[3:].tolist()))
    assert task.chance() == pytest.approx(1 / 64)
    assert task.metric(perfect_logits(task, batch), batch).tolist() == [1.0] * 6
    assert make_task(json.loads(json.dumps(task.spec()))).spec() == task.spec()


def test_prompt_pairs_patch_pairs_are_the_files_pairs():
    task = probe_task()
    pair = task.patch_pairs(3, seed=1)
    assert torch.equal(pair.clean.inputs, task.sample(3, seed=1).inputs)
    for row in range(3):
        clean = pair.clean.inputs[row].tolist()
        source = next(p for p in task.params.pairs if clean[: len(p["clean"])] == p["clean"])
        n = len(source["clean"])
        assert pair.corrupted.inputs[row, :n].tolist() == source["corrupted"]
        differs = source["corrupted_answer"] is not None
        assert pair.differs[row].tolist() == [differs and t == n - 1 for t in range(4)]
        if differs:
            assert pair.corrupted.targets[row, n - 1] == source["corrupted_answer"]


def test_prompt_pairs_patching_needs_a_corrupted_answer():
    task = probe_task([LINES[2]])
    task.sample(2, seed=0)  # a probe without corrupted answers still samples and scores
    with pytest.raises(ValueError, match="corrupted_answer"):
        task.patch_pairs(2, seed=0)


@pytest.mark.parametrize("lines, message", [
    (['{"clean": [1, 2], "corrupted": [1, 3], "answer": 4}', '{"clean": [1, 2]'], "line 2: not valid JSON"),
    (['{"clean": [1, 2], "answer": 4}'], "line 1: missing corrupted"),
    (['{"clean": [1, 2], "corrupted": [1], "answer": 4}'], "line 1: clean has 2 tokens and corrupted 1"),
    (['{"clean": [1, 2], "corrupted": [1, 70], "answer": 4}'], r"line 1: corrupted\[1\]: token id 70 is outside"),
    (['{"clean": [1, 2], "corrupted": [1, 3], "answer": 64}'], "line 1: answer: token id 64 is outside"),
    (['{"clean": [1, 2.5], "corrupted": [1, 3], "answer": 4}'], "must be an integer"),
    (['{"clean": [], "corrupted": [], "answer": 4}'], "1 to 256 tokens"),
    (['{"clean": "a b", "corrupted": "a c", "answer": "d"}'], "line 1: clean is a string, but there is no tokenizer"),
    (['{"clean": [1], "corrupted": [2], "answer": 4, "extra": 1}'], "unknown keys"),
    (['[1, 2]'], "line 1: expected a JSON object"),
    (['{"clean": [1], "corrupted": [2], "answer": NaN}'], "line 1: not valid JSON"),
    (["", "  "], "no pairs"),
    ([json.dumps({"clean": [1] * (MAX_PROMPT_TOKENS + 1), "corrupted": [1] * (MAX_PROMPT_TOKENS + 1), "answer": 1})],
     "1 to 256 tokens"),
    ([LINES[2]] * (MAX_PAIRS + 1), f"line {MAX_PAIRS + 1}: a probe holds at most {MAX_PAIRS} pairs"),
])
def test_probe_errors_name_the_line(lines, message):
    with pytest.raises(ProbeError, match=message):
        parse_probe(lines, vocab_size=64)


def test_task_refuses_ids_outside_the_models_vocabulary():
    pairs = parse_probe([LINES[0]])  # ids up to 41
    with pytest.raises(ValueError, match="token id 41 is outside the vocabulary"):
        make_task({"name": "prompt_pairs", "params": {"vocab_size": 41, "pairs": pairs}})
    with pytest.raises(ValueError, match="pairs must be a non-empty list"):
        make_task({"name": "prompt_pairs", "params": {"vocab_size": 64}})


def tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["[UNK]", "when", "mary", "and", "john", "went", "out", "gave", "it", "to", "a", "bottle"]
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    return tokenizer.to_str()


def test_strings_are_tokenized_with_the_tokenizer_json(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(tiny_tokenizer_json())
    tokenizer = load_tokenizer(str(path))
    line = json.dumps({"clean": "when mary and john went out john gave it to",
                       "corrupted": "when mary and john went out mary gave it to",
                       "answer": "mary", "corrupted_answer": "john"})
    (pair,) = parse_probe([line], vocab_size=12, tokenizer=tokenizer)
    assert pair == {"clean": [1, 2, 3, 4, 5, 6, 4, 7, 8, 9], "corrupted": [1, 2, 3, 4, 5, 6, 2, 7, 8, 9],
                    "answer": 2, "corrupted_answer": 4}
    with pytest.raises(ProbeError, match="line 1: answer 'a bottle' is 2 tokens"):
        parse_probe([json.dumps({"clean": "mary", "corrupted": "john", "answer": "a bottle"})], tokenizer=tokenizer)
    with pytest.raises(ProbeError, match="tokenizer.json could not be read"):
        load_tokenizer("{not json", from_text=True)
