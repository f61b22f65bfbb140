"""Associative recall draws its item count per sequence: layout, padding, determinism."""
import torch

from mnemoscope.models.tasks import make_task

BITS, IL = 3, 2


def _task(**kw):
    return make_task("associative_recall", bits=BITS, item_length=IL, **kw)


def _decode_row(inputs, mask, targets):
    """One sequence read back from its own layout: items, query, answer, K and its T."""
    K = int(inputs[:, BITS].sum())
    qs = K * (IL + 1)
    items = inputs[:qs].reshape(K, IL + 1, BITS + 2)[:, 1:, :BITS]
    query = inputs[qs + 1:qs + 1 + IL, :BITS]
    end = qs + 2 + 2 * IL
    return items, query, targets[end - IL:end], K, end


def test_item_counts_vary_within_a_batch_and_cover_the_range():
    b = _task(min_items=2, max_items=6).sample(50, seed=4)
    counts = b.inputs[..., BITS].sum(1).long()
    assert set(counts.tolist()) == {2, 3, 4, 5, 6}
    assert all(abs(int((counts == k).sum()) - 10) <= 1 for k in range(2, 7))  # systematic: 10 each
    assert b.inputs.shape[1] == 6 * (IL + 1) + 2 + 2 * IL  # padded to the longest


def test_each_sequence_has_its_own_layout_answer_and_mask():
    b = _task(min_items=2, max_items=5).sample(80, seed=1)
    T = b.inputs.shape[1]
    for i in range(80):
        items, query, answer, K, end = _decode_row(b.inputs[i], b.mask[i], b.targets[i])
        listed = b.inputs[i, :K * (IL + 1)].reshape(K, IL + 1, BITS + 2)
        assert (listed[:, 0] == torch.eye(BITS + 2)[BITS]).all()
        assert b.inputs[i, K * (IL + 1), BITS + 1] == 1 and b.inputs[i, K * (IL + 1) + 1 + IL, BITS + 1] == 1
        match = (items == query).flatten(1).all(-1)
        assert int(match.sum()) == 1
        q = int(match.float().argmax())
        assert q <= K - 2
        assert torch.equal(answer, items[q + 1])
        assert torch.equal(b.mask[i], (torch.arange(T) >= end - IL) & (torch.arange(T) < end))
        assert (b.inputs[i, end:] == 0).all() and (b.targets[i, end:] == 0).all()  # padding


def test_seeded_and_deterministic():
    t = _task(min_items=2, max_items=6)
    a, b, c = t.sample(16, seed=7), t.sample(16, seed=7), t.sample(16, seed=8)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs[:, :c.inputs.shape[1]], c.inputs[:, :a.inputs.shape[1]])


def test_patch_pairs_keep_each_sequence_count_and_change_only_its_answer():
    t = _task(min_items=2, max_items=6)
    pp = t.patch_pairs(40, seed=3)
    assert torch.equal(pp.clean.inputs[..., BITS], pp.corrupted.inputs[..., BITS])  # same K per sequence
    assert torch.equal(pp.clean.mask, pp.corrupted.mask)
    assert torch.equal(pp.differs, pp.clean.mask & (pp.clean.targets != pp.corrupted.targets).any(-1))
    assert pp.differs.any(1).all()


def test_position_roles_align_queries_across_counts():
    t = _task(min_items=2, max_items=6)
    b = t.sample(20, seed=0)
    roles = t.position_roles(b)
    # every answer row of every sequence has the same role as the others' same answer row
    answer_roles = roles[b.mask].reshape(20, IL)
    assert (answer_roles == answer_roles[0]).all()
