"""Synthetic tasks: seeded determinism, exact layouts, metrics against perfect and
input-ignoring predictors, and clean/corrupted patching pairs."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mnemoscope.models.tasks import TASKS, Batch, make_task, param_specs
from mnemoscope.models.tasks.recall import FILLER

NAMES = ["copy", "repeat_copy", "associative_recall", "mqar"]


def perfect_logits(task, batch: Batch) -> torch.Tensor:
    if task.output_kind == "bits":
        return batch.targets.float() * 20 - 10
    return torch.nn.functional.one_hot(batch.targets, task.output_size).float() * 20 - 10


def batches_equal(a: Batch, b: Batch) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a.inputs, a.targets, a.mask), (b.inputs, b.targets, b.mask)))


# -- every task -------------------------------------------------------------------------


def test_all_tasks_registered():
    make_task("copy")
    assert set(NAMES) <= set(TASKS)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_batch_and_no_global_rng(name):
    task = make_task(name)
    state = torch.get_rng_state()
    torch.manual_seed(123)
    a = task.sample(16, seed=7)
    torch.manual_seed(456)
    b = task.sample(16, seed=7)
    assert batches_equal(a, b)
    pa, pb = task.patch_pairs(16, seed=7), task.patch_pairs(16, seed=7)
    assert batches_equal(pa.corrupted, pb.corrupted) and torch.equal(pa.differs, pb.differs)
    torch.set_rng_state(state)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_leaves_global_rng_alone(name):
    task = make_task(name)
    before = torch.get_rng_state()
    task.sample(8, seed=1)
    task.patch_pairs(8, seed=1)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_differ(name):
    task = make_task(name)
    a, b = task.sample(16, seed=0), task.sample(16, seed=1)
    assert a.inputs.shape != b.inputs.shape or not torch.equal(a.inputs, b.inputs)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name):
    task = make_task(name)
    b = task.sample(5, seed=3)
    B, T = b.mask.shape
    assert B == 5 == len(b)
    assert b.mask.dtype == torch.bool and b.mask.any(1).all()
    if task.output_kind == "bits":
        assert b.inputs.shape == (B, T, task.input_size) and b.inputs.dtype == torch.float32
        assert b.targets.shape == (B, T, task.output_size)
        assert set(b.targets.unique().tolist()) <= {0.0, 1.0}
        assert task.vocab_size is None
    else:
        assert b.inputs.shape == (B, T) and b.inputs.dtype == torch.long
        assert b.targets.shape == (B, T) and b.targets.dtype == torch.long
        assert task.vocab_size == task.input_size == task.output_size
        assert b.inputs.max() < task.vocab_size and b.inputs.min() >= 0


@pytest.mark.parametrize("name", NAMES)
def test_perfect_predictor(name):
    task = make_task(name)
    b = task.sample(32, seed=5)
    m = task.metric(perfect_logits(task, b), b)
    assert m.shape == (32,)
    expected = 1.0 if task.higher_is_better else 0.0
    assert torch.allclose(m, torch.full_like(m, expected))


@pytest.mark.parametrize("name", NAMES)
def test_metric_is_sum_of_per_step_contributions(name):
    task = make_task(name)
    b = task.sample(16, seed=2)
    logits = torch.randn(*b.mask.shape, task.output_size, generator=torch.Generator().manual_seed(0))
    per_step = task.metric_per_step(logits, b)
    assert per_step.shape == b.mask.shape
    assert (per_step[~b.mask] == 0).all()
    assert torch.allclose(per_step.sum(1), task.metric(logits, b))
    assert task.loss(logits, b).ndim == 0 and task.loss(perfect_logits(task, b), b) < task.loss(logits, b)


@pytest.mark.parametrize("name", NAMES)
def test_metric_description(name):
    task = make_task(name)
    kinds = {"copy": "bits", "repeat_copy": "bits", "associative_recall": "bits", "mqar": "classes"}
    assert task.output_kind == kinds[name]
    assert task.metric_name == ("accuracy" if name == "mqar" else "wrong_bits")
    assert task.higher_is_better == (name == "mqar")
    assert "mask" in task.__doc__  # the rendered example


@pytest.mark.parametrize("name", NAMES)
def test_spec_round_trip(name):
    small = {
        "copy": {"bits": 4, "min_length": 3, "max_length": 5},
        "repeat_copy": {"bits": 3, "max_repeats": 3},
        "associative_recall": {"bits": 4, "item_length": 2, "max_items": 4},
        "mqar": {"vocab_size": 32, "seq_len": 40, "num_pairs": 4, "power_a": 0.5},
    }[name]
    task = make_task(name, **small)
    spec = json.loads(json.dumps(task.spec()))
    again = make_task(spec)
    assert type(again) is type(task) and again.params == task.params
    assert batches_equal(again.sample(4, seed=9), task.sample(4, seed=9))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_params_are_named(name):
    with pytest.raises(ValueError, match="bogus_knob"):
        make_task(name, bogus_knob=1)
    with pytest.raises(ValueError, match="zzz"):
        make_task({"name": name, "params": {"zzz": 2}})


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="nonesuch"):
        make_task("nonesuch")


@pytest.mark.parametrize(
    "name, params",
    [
        ("copy", {"min_length": 0}),
        ("copy", {"min_length": 5, "max_length": 4}),
        ("copy", {"bits": 0}),
        ("repeat_copy", {"min_repeats": 3, "max_repeats": 2}),
        ("associative_recall", {"min_items": 1}),
        ("associative_recall", {"bits": 1, "item_length": 2, "max_items": 4}),
        ("mqar", {"vocab_size": 16, "num_pairs": 8}),
        ("mqar", {"seq_len": 30, "num_pairs": 8}),
        ("mqar", {"power_a": 0.0}),
    ],
)
def test_bad_params_raise(name, params):
    with pytest.raises(ValueError, match=name):
        make_task(name, **params)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [0, -1])
def test_bad_batch_size(name, n):
    with pytest.raises(ValueError, match="n "):
        make_task(name).sample(n, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_patch_pairs_differ_exactly_where_targets_differ(name):
    task = make_task(name)
    pp = task.patch_pairs(64, seed=11)
    c, k = pp.clean, pp.corrupted
    assert batches_equal(c, task.sample(64, seed=11))
    assert c.inputs.shape == k.inputs.shape and c.targets.shape == k.targets.shape
    assert torch.equal(c.mask, k.mask)
    target_diff = (c.targets != k.targets).flatten(2).any(-1) if c.targets.dim() == 3 else c.targets != k.targets
    assert pp.differs.dtype == torch.bool and torch.equal(pp.differs, target_diff)
    assert (pp.differs <= c.mask).all()
    assert pp.differs.any(1).all(), "every corrupted sequence must change some answer"
    # the clean predictor is now wrong exactly on the differing positions
    right = task.metric_per_step(perfect_logits(task, c), k)
    if task.output_kind == "bits":
        assert torch.equal(right > 0, pp.differs)


# -- copy -------------------------------------------------------------------------------


def test_copy_exact_layout():
    task = make_task("copy", bits=5, min_length=4, max_length=4)
    b = task.sample(10, seed=0)
    L, bits = 4, 5
    assert b.inputs.shape == (10, 2 * L + 1, bits + 1) and b.targets.shape == (10, 2 * L + 1, bits)
    assert (b.inputs[:, :L, bits] == 0).all()
    assert (b.inputs[:, L] == torch.eye(bits + 1)[bits]).all()
    assert (b.inputs[:, L + 1 :] == 0).all()
    assert torch.equal(b.targets[:, L + 1 :], b.inputs[:, :L, :bits])  # shifted by L+1
    assert (b.targets[:, : L + 1] == 0).all()
    assert torch.equal(b.mask, torch.arange(2 * L + 1).expand(10, -1) > L)


def test_copy_length_range():
    task = make_task("copy", min_length=2, max_length=5)
    lengths = {(task.sample(2, seed=s).inputs.shape[1] - 1) // 2 for s in range(60)}
    assert lengths <= {2, 3, 4, 5}
    # lengths are per sequence: one batch of 8 covers the range twice over, padded at the end
    b = task.sample(8, seed=0)
    per_seq = b.mask.sum(1)
    assert sorted(per_seq.tolist()) == [2, 2, 3, 3, 4, 4, 5, 5] and b.mask.shape[1] == 11
    for row, L in enumerate(per_seq.tolist()):
        assert (b.inputs[row, L] == torch.eye(9)[8]).all() and (b.inputs[row, L + 1:] == 0).all()
        assert torch.equal(b.targets[row, L + 1:2 * L + 1], b.inputs[row, :L, :8])
        assert not b.mask[row, 2 * L + 1:].any() and (b.targets[row, 2 * L + 1:] == 0).all()


def test_copy_position_roles_align_like_with_like():
    task = make_task("copy", bits=3, min_length=1, max_length=3)
    b = task.sample(6, seed=0)
    roles = task.position_roles(b)
    for i in range(6):
        for j in range(6):
            Li, Lj = int(b.mask[i].sum()), int(b.mask[j].sum())
            # the first output position of every sequence plays the same part
            assert roles[i, Li + 1] == roles[j, Lj + 1]
            assert (roles[i, Li] == roles[j, Lj])  # the delimiter
    assert all(len(set(r.tolist())) == r.numel() for r in roles)  # unique within a sequence


def test_copy_chance_and_constant_predictor():
    task = make_task("copy", bits=8, min_length=1, max_length=20)
    assert task.chance() == pytest.approx(10.5 * 8 / 2)
    fixed = make_task("copy", bits=8, min_length=6, max_length=6)
    b = fixed.sample(2000, seed=0)
    assert fixed.chance() == fixed.chance(b) == 24
    zero = torch.full(b.targets.shape, -1.0)
    assert fixed.metric(zero, b).mean().item() == pytest.approx(24, rel=0.03)
    # over many batches of random length the constant output averages chance()
    scores = []
    for s in range(200):
        b = task.sample(8, seed=s)
        scores.append(task.metric(torch.full(b.targets.shape, -1.0), b).mean().item())
        assert task.chance(b) == b.mask.sum(1).float().mean().item() * 4
    assert sum(scores) / len(scores) == pytest.approx(task.chance(), rel=0.1)


def test_copy_patch_changes_one_input_row():
    task = make_task("copy", bits=3, min_length=7, max_length=7)
    pp = task.patch_pairs(200, seed=4)
    rows = (pp.clean.inputs != pp.corrupted.inputs).any(-1)  # [B, T]
    assert (rows.sum(1) == 1).all() and not rows[:, 7:].any()
    # the single differing output row is that input row shifted by L+1
    assert torch.equal(pp.differs[:, 8:], rows[:, :7])
    assert len(set(rows.float().argmax(1).tolist())) == 7  # every position gets corrupted


# -- repeat copy ------------------------------------------------------------------------


def test_repeat_copy_exact_layout():
    task = make_task("repeat_copy", bits=4, min_length=3, max_length=3, min_repeats=2, max_repeats=4)
    b = task.sample(6, seed=1)
    L, bits = 3, 4
    T = b.inputs.shape[1]
    assert b.inputs.shape == (6, T, bits + 2) and b.targets.shape == (6, T, bits + 1)
    assert T == L + 1 + L * 4 + 1  # padded to the longest: 6 sequences cover R = 2..4
    for row in range(6):
        x, y, m = b.inputs[row], b.targets[row], b.mask[row]
        R = (int(m.sum()) - 1) // L
        end = L + 1 + L * R
        assert 2 <= R <= 4
        assert (x[:L, bits:] == 0).all()
        assert (x[L, :bits] == 0).all() and x[L, bits] == 1
        assert x[L, bits + 1] == pytest.approx(R / 4)
        assert (x[L + 1:] == 0).all()
        for r in range(R):
            assert torch.equal(y[L + 1 + r * L: L + 1 + (r + 1) * L, :bits], x[:L, :bits])
        assert (y[:L + 1] == 0).all() and (y[:end, bits] == 0).all()
        assert (y[end] == torch.eye(bits + 1)[bits]).all() and (y[end + 1:] == 0).all()
        assert torch.equal(m, (torch.arange(T) > L) & (torch.arange(T) <= end))


def test_repeat_copy_repeats_vary_and_are_announced():
    task = make_task("repeat_copy", bits=2, min_length=2, max_length=2, min_repeats=1, max_repeats=3)
    seen = set()
    for s in range(10):
        b = task.sample(3, seed=s)  # per sequence: three sequences cover the three repeat counts
        for row in range(3):
            R = round(b.inputs[row, 2, 3].item() * 3)
            assert int(b.mask[row].sum()) == 2 * R + 1 and b.targets[row, 3 + 2 * R, 2] == 1
            seen.add(R)
        assert b.inputs.shape[1] == 2 + 1 + 2 * 3 + 1
    assert seen == {1, 2, 3}


def test_repeat_copy_chance_and_constant_predictor():
    task = make_task("repeat_copy")
    assert task.chance() == pytest.approx(5.5 * 3 * 8 / 2 + 1)
    scores = []
    for s in range(300):
        b = task.sample(8, seed=s)
        m = task.metric(torch.full(b.targets.shape, -1.0), b).mean().item()
        assert m == pytest.approx(task.chance(b), rel=0.35, abs=3)
        scores.append(m)
    assert sum(scores) / len(scores) == pytest.approx(task.chance(), rel=0.15)


def test_repeat_copy_patch_changes_one_row_and_its_repeats():
    task = make_task("repeat_copy", bits=3, min_length=4, max_length=4, min_repeats=3, max_repeats=3)
    pp = task.patch_pairs(50, seed=2)
    rows = (pp.clean.inputs != pp.corrupted.inputs).any(-1)
    assert (rows.sum(1) == 1).all() and not rows[:, 4:].any()
    assert torch.equal(pp.differs[:, 5:-1], rows[:, :4].repeat(1, 3))
    assert not pp.differs[:, -1].any()  # the end marker never changes


# -- associative recall -----------------------------------------------------------------


def decode_recall(b: Batch, bits: int, item_length: int):
    """Items `[B, K, IL, bits]`, the query `[B, IL, bits]` and K, read back from inputs."""
    B, T, _ = b.inputs.shape
    K = (T - 2 - 2 * item_length) // (item_length + 1)
    listed = b.inputs[:, : K * (item_length + 1)].reshape(B, K, item_length + 1, bits + 2)
    qs = K * (item_length + 1)
    return listed[:, :, 1:, :bits], b.inputs[:, qs + 1 : qs + 1 + item_length, :bits], K


def test_associative_recall_layout_and_answers():
    bits, IL = 3, 2
    task = make_task("associative_recall", bits=bits, item_length=IL, min_items=4, max_items=4)
    b = task.sample(100, seed=0)
    K = 4
    T = K * (IL + 1) + 2 + 2 * IL
    assert b.inputs.shape == (100, T, bits + 2) and b.targets.shape == (100, T, bits)
    listed = b.inputs[:, : K * (IL + 1)].reshape(100, K, IL + 1, bits + 2)
    assert (listed[:, :, 0] == torch.eye(bits + 2)[bits]).all()  # item delimiters
    assert (listed[:, :, 1:, bits:] == 0).all()
    qs = K * (IL + 1)
    assert (b.inputs[:, qs] == torch.eye(bits + 2)[bits + 1]).all()
    assert (b.inputs[:, qs + 1 + IL] == torch.eye(bits + 2)[bits + 1]).all()
    assert (b.inputs[:, qs + 1 : qs + 1 + IL, bits:] == 0).all()
    assert (b.inputs[:, T - IL :] == 0).all()
    assert torch.equal(b.mask, torch.arange(T).expand(100, -1) >= T - IL)
    items, query, _ = decode_recall(b, bits, IL)
    matches = (items == query[:, None]).flatten(2).all(-1)  # [B, K]
    assert (matches.sum(1) == 1).all(), "the query is exactly one listed item"
    q = matches.float().argmax(1)
    assert (q <= K - 2).all() and len(set(q.tolist())) == K - 1
    assert torch.equal(b.targets[:, T - IL :], items[torch.arange(100), q + 1])
    assert (b.targets[:, : T - IL] == 0).all()


def test_associative_recall_items_distinct_in_small_space():
    # 8 possible items, 6 per list: collisions would be common without redraws
    task = make_task("associative_recall", bits=3, item_length=1, min_items=6, max_items=6)
    items, _, K = decode_recall(task.sample(200, seed=3), 3, 1)
    eq = (items[:, :, None] == items[:, None]).flatten(3).all(-1)
    assert torch.equal(eq, torch.eye(K, dtype=torch.bool).expand_as(eq))


def test_associative_recall_item_count_range():
    task = make_task("associative_recall")
    b = task.sample(10, seed=0)
    counts = b.inputs[..., 6].sum(1).long()  # one item delimiter per listed item
    assert sorted(counts.tolist()) == [2, 2, 3, 3, 4, 4, 5, 5, 6, 6]  # per sequence, covering the range


def test_associative_recall_chance_and_constant_predictor():
    task = make_task("associative_recall")
    assert task.chance() == 9
    b = task.sample(3000, seed=1)
    zero = torch.full(b.targets.shape, -1.0)
    assert task.metric(zero, b).mean().item() == pytest.approx(9, rel=0.03)


def test_associative_recall_patch_changes_only_the_answer_item():
    bits, IL = 2, 2
    task = make_task("associative_recall", bits=bits, item_length=IL, min_items=5, max_items=5)
    pp = task.patch_pairs(200, seed=6)
    c_items, c_query, K = decode_recall(pp.clean, bits, IL)
    k_items, k_query, _ = decode_recall(pp.corrupted, bits, IL)
    assert torch.equal(c_query, k_query)
    q = (c_items == c_query[:, None]).flatten(2).all(-1).float().argmax(1)
    changed = (c_items != k_items).flatten(2).any(-1)  # [B, K]
    assert torch.equal(changed, torch.nn.functional.one_hot(q + 1, K).bool())
    # nothing else in the inputs moved: delimiters, query, output phase
    c_in, k_in = pp.clean.inputs.clone(), pp.corrupted.inputs.clone()
    for x in (c_in, k_in):
        x[:, : K * (IL + 1)].reshape(200, K, IL + 1, bits + 2)[:, :, 1:, :bits] = 0
    assert torch.equal(c_in, k_in)
    # the new item is distinct from every item of the list, so the lookup stays unique
    eq = (k_items[:, :, None] == k_items[:, None]).flatten(3).all(-1)
    assert torch.equal(eq, torch.eye(K, dtype=torch.bool).expand_as(eq))


# -- MQAR -------------------------------------------------------------------------------


def test_mqar_layout_keys_values_queries():
    V, T, n = 64, 64, 8
    task = make_task("mqar", vocab_size=V, seq_len=T, num_pairs=n)
    b = task.sample(300, seed=0)
    keys, values = b.inputs[:, 0 : 2 * n : 2], b.inputs[:, 1 : 2 * n : 2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
    for row in range(300):
        assert len(set(keys[row].tolist())) == n and len(set(values[row].tolist())) == n
        pairs = dict(zip(keys[row].tolist(), values[row].tolist()))
        qpos = b.mask[row].nonzero().flatten()
        assert len(qpos) == n and (qpos >= 2 * n).all() and ((qpos - 2 * n) % 2 == 0).all()
        queried = b.inputs[row, qpos].tolist()
        assert sorted(queried) == sorted(pairs), "every key is queried exactly once"
        for p, k in zip(qpos.tolist(), queried):
            assert b.targets[row, p].item() == pairs[k]  # answer on the query position itself
        rest = torch.ones(T, dtype=torch.bool)
        rest[: 2 * n] = False
        rest[qpos] = False
        assert (b.inputs[row, rest] == FILLER).all()
    assert (b.targets[~b.mask] == 0).all()


def test_mqar_power_law_puts_queries_early():
    def mean_gap(power_a):
        task = make_task("mqar", vocab_size=64, seq_len=128, num_pairs=4, power_a=power_a)
        b = task.sample(500, seed=0)
        pos = b.mask.nonzero()[:, 1].float()
        return ((pos - 8) / 2).mean().item()

    space = (128 - 8) // 2
    assert mean_gap(1.0) == pytest.approx((space - 1) / 2, rel=0.1)  # uniform
    assert mean_gap(0.01) < 0.5 * mean_gap(1.0)


def test_mqar_chance_and_random_value_predictor():
    task = make_task("mqar")
    assert task.chance() == pytest.approx(1 / 32)
    b = task.sample(4000, seed=2)
    logits = torch.full((*b.inputs.shape, 64), -10.0)
    logits[..., 32:] = torch.rand(*b.inputs.shape, 32, generator=torch.Generator().manual_seed(0))
    assert task.metric(logits, b).mean().item() == pytest.approx(1 / 32, abs=0.004)
    always_first = torch.zeros(*b.inputs.shape, 64)
    always_first[..., 32] = 1.0
    assert task.metric(always_first, b).mean().item() == pytest.approx(1 / 32, abs=0.004)


def test_mqar_patch_changes_one_value_and_its_queries():
    n = 6
    task = make_task("mqar", vocab_size=32, seq_len=48, num_pairs=n)
    pp = task.patch_pairs(300, seed=8)
    c, k = pp.clean.inputs, pp.corrupted.inputs
    diff = c != k
    assert (diff.sum(1) == 1).all()
    pos = diff.float().argmax(1)
    assert ((pos % 2 == 1) & (pos < 2 * n)).all(), "only a value token of the pairs changes"
    new_values = k[:, 1 : 2 * n : 2]
    assert ((new_values >= 16) & (new_values < 32)).all()
    assert all(len(set(r.tolist())) == n for r in new_values), "the new value is unused elsewhere"
    key = c[torch.arange(300), pos - 1]
    queries_of_key = pp.clean.mask & (c == key[:, None])
    assert torch.equal(pp.differs, queries_of_key)
    assert torch.equal(pp.corrupted.targets[pp.differs], k[torch.arange(300), pos])


@pytest.mark.parametrize("seed", [1.5, "3", None, -1, 2**64, True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        make_task("copy").sample(2, seed)


def test_numpy_seed_accepted():
    np = pytest.importorskip("numpy")
    task = make_task("mqar")
    assert batches_equal(task.sample(3, np.int64(5)), task.sample(3, 5))


# -- parameter table: types, ranges, max_steps -------------------------------------------------

def _bad_values(spec):
    """Values each parameter must refuse: just outside its range, the wrong type, not finite."""
    bad = [spec.low - 1 if spec.kind is int else spec.low / 2, spec.high + 1 if spec.kind is int else spec.high * 2,
           True, "8", None, [1]]
    if spec.kind is int:
        bad += [8.0, 2.5]
    else:
        bad += [float("nan"), float("inf"), -float("inf")]
    return bad


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_is_declared_with_a_range(name):
    cls = type(make_task(name))
    specs = param_specs(cls.Params)
    assert list(specs) == [f.name for f in dataclasses.fields(cls.Params)]
    defaults = make_task(name).params
    for spec in specs.values():
        assert spec.kind in (int, float) and spec.low <= getattr(defaults, spec.name) <= spec.high and spec.doc


@pytest.mark.parametrize("name", NAMES)
def test_bad_values_name_the_parameter_and_its_range(name):
    for spec in param_specs(type(make_task(name)).Params).values():
        for value in _bad_values(spec):
            with pytest.raises(ValueError) as info:
                make_task(name, **{spec.name: value})
            message = str(info.value)
            assert name in message and spec.name in message and f"[{spec.low:g}, {spec.high:g}]" in message, message


@pytest.mark.parametrize("power_a", [700, 1e10, float("inf"), float("nan"), 0.0, -1.0])
def test_mqar_power_a_out_of_range(power_a):
    with pytest.raises(ValueError, match=r"power_a must be a finite number in \[0\.001, 16\]"):
        make_task("mqar", power_a=power_a)


@pytest.mark.parametrize("power_a", [1e-3, 16.0])
def test_mqar_power_a_extremes_sample_at_the_longest_sequence(power_a):
    p = param_specs(type(make_task("mqar")).Params)
    longest = p["seq_len"].high
    task = make_task("mqar", vocab_size=p["vocab_size"].high, seq_len=longest, num_pairs=p["num_pairs"].high,
                     power_a=power_a)
    batch = task.sample(1, seed=0)
    assert batch.inputs.shape == (1, longest) == (1, task.max_steps())
    assert int(batch.mask.sum()) == p["num_pairs"].high


@pytest.mark.parametrize("name, low, high", [("copy", "min_length", "max_length"),
                                             ("repeat_copy", "min_length", "max_length"),
                                             ("repeat_copy", "min_repeats", "max_repeats"),
                                             ("associative_recall", "min_items", "max_items")])
def test_min_above_max_is_refused(name, low, high):
    with pytest.raises(ValueError, match=f"{name}: {high} \\(3\\) must be at least {low} \\(4\\)"):
        make_task(name, **{low: 4, high: 3})


def test_integer_like_values_are_stored_as_python_numbers():
    np = pytest.importorskip("numpy")
    task = make_task("mqar", num_pairs=np.int64(4), power_a=1)
    assert type(task.params.num_pairs) is int and type(task.params.power_a) is float
    assert json.loads(json.dumps(task.spec())) == task.spec()


MAX_STEPS_CASES = [
    ("copy", {"min_length": 7, "max_length": 7}),
    ("copy", {"min_length": 1, "max_length": 30}),
    ("copy", {"bits": 1, "min_length": 1 << 16, "max_length": 1 << 16}),  # the longest copy there is
    ("repeat_copy", {"min_length": 5, "max_length": 5, "min_repeats": 3, "max_repeats": 3}),
    ("repeat_copy", {"min_length": 1, "max_length": 64, "min_repeats": 1, "max_repeats": 64}),
    ("repeat_copy", {"min_length": 64, "max_length": 64, "min_repeats": 64, "max_repeats": 64}),
    ("associative_recall", {"min_items": 6, "max_items": 6, "item_length": 2}),
    ("associative_recall", {"min_items": 2, "max_items": 12, "item_length": 4}),
    ("associative_recall", {"bits": 16, "item_length": 1, "min_items": 1024, "max_items": 1024}),  # most items
    ("mqar", {}),
    ("mqar", {"vocab_size": 16, "seq_len": 20, "num_pairs": 5}),
]


@pytest.mark.parametrize("name, params", MAX_STEPS_CASES)
def test_max_steps_bounds_every_batch(name, params):
    task = make_task(name, **params)
    longest = task.max_steps()
    seen = [task.sample(1 if longest > 10_000 else 4, seed=seed).inputs.shape[1] for seed in range(5)]
    assert max(seen) <= longest
    fixed = all(params.get(f"min_{k}", 0) == params.get(f"max_{k}", 0) for k in ("length", "repeats", "items"))
    if fixed:  # one possible length: the bound is exact
        assert seen == [longest] * 5
    patched = task.patch_pairs(2, seed=0)
    assert patched.clean.inputs.shape[1] <= longest


def test_mqar_position_roles_pair_queries_with_queries():
    task = make_task("mqar", vocab_size=16, seq_len=32, num_pairs=3)
    b = task.sample(5, seed=0)
    roles = task.position_roles(b)
    query_roles = [set(roles[i][b.mask[i]].tolist()) for i in range(5)]
    assert all(q == query_roles[0] for q in query_roles)  # the k-th query of each sequence share a role
    filler = b.inputs == 0
    assert not (set(roles[0][filler[0]].tolist()) & query_roles[0])  # a filler never stands in for a query
    assert all(len(set(r.tolist())) == r.numel() for r in roles)
