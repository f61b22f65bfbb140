"""Ablations: batched rows equal one-at-a-time runs; causality; modes; every architecture."""
import json

import pytest
import torch

from mnemoscope.analysis.ablation import AblationSpec, derangement, run_ablations
from mnemoscope.analysis.sites import bypass_sites, element_mask, read_sites
from mnemoscope.models.sites import Intervention, run_with_sites
from mnemoscope.models.tasks import make_task


def _one_at_a_time(model, batch, spec, values):
    """Reference: one forward pass with plain tensor interventions from the contract."""
    specs = model.site_specs()
    ivs = [Intervention(n, values[n], steps=spec.steps, elements=element_mask(specs[n], spec.elements))
           for n in spec.sites]
    with torch.no_grad():
        logits, _ = run_with_sites(model, batch.inputs, interventions=ivs)
    return logits


def _clean_logits(model, batch):
    with torch.no_grad():
        return run_with_sites(model, batch.inputs)[0]


def test_batched_equals_one_at_a_time(ntm):
    from mnemoscope.models.tasks import make_task

    task = make_task("copy", min_length=4, max_length=4)
    batch = task.sample(4, 0)
    specs = [
        AblationSpec(["memory.read"], "zero"),
        AblationSpec(["memory.read"], "mean", steps=[5, 6]),
        AblationSpec(["memory.read", "controller.output"], "resample"),
        AblationSpec(["memory.read_weights"], "zero", elements={"slot": [0, 1, 2, 3]}),
        AblationSpec(["memory.add"], "resample", steps=[1], elements={"head": [0]}),
    ]
    results = run_ablations(ntm, task, batch, specs, seed=3)
    with torch.no_grad():
        _, clean = run_with_sites(ntm, batch.inputs, record=["memory.read", "controller.output", "memory.add"])
    donor = derangement(4, torch.Generator().manual_seed(3))
    for spec, res in zip(specs, results):
        if spec.mode == "zero":
            values = {n: 0.0 for n in spec.sites}
        elif spec.mode == "mean":
            # the mean over the other sequences: a row's own value is left out
            values = {n: (clean[n].sum(0, keepdim=True) - clean[n]) / 3 for n in spec.sites}
        else:
            values = {n: clean[n][donor] for n in spec.sites}
        ref = _one_at_a_time(ntm, batch, spec, values)
        # logits reach |30| here, where float32 rounding of a different batch size is ~1e-5;
        # the results a user reads are probabilities, metrics and output changes
        assert (task.probs(res.logits) - task.probs(ref)).abs().max() < 1e-5, spec.describe()
        assert (res.logits - ref).abs().max() < 1e-6 * max(1.0, float(ref.abs().max())) * 10
        assert abs(res.metric - float(task.metric(ref, batch).mean())) < 1e-5
        ref_change = (task.probs(ref) - task.probs(res.logits.new_tensor(0) + _clean_logits(ntm, batch)))
        assert abs(res.prob_change - float((ref_change.abs().mean(-1) * batch.mask).sum() / batch.mask.sum())) < 1e-5


def test_chunked_equals_unchunked(make_model, task):
    m = make_model("dnc", task)
    batch = task.sample(3, 0)
    specs = [AblationSpec(["memory.read"], mode) for mode in ("zero", "mean", "resample")]
    whole = run_ablations(m, task, batch, specs)
    tiny_budget = run_ablations(m, task, batch, specs, memory_budget_mb=1e-6)  # one spec per chunk
    for a, b in zip(whole, tiny_budget):
        assert (task.probs(a.logits) - task.probs(b.logits)).abs().max() < 1e-5
        assert abs(a.metric - b.metric) < 1e-5 and abs(a.prob_change - b.prob_change) < 1e-5


def test_the_no_memory_control_has_no_reads_to_ablate(make_model, task):
    assert read_sites(make_model("lstm", task)) == []


@pytest.mark.parametrize("t", [0, 3, 5])
def test_ablating_at_t_changes_nothing_before_t(arch, make_model, task, t):
    """Every memory read at once; the no-memory control has none, so its controller
    output, the one path its answers take (the same causality, checked on the control)."""
    m = make_model(arch, task)
    sites = read_sites(m)
    if arch == "lstm":
        assert sites == []
        sites = bypass_sites(m)
        assert sites == ["controller.output"]
    assert sites, f"{arch} declares no site of kind 'read'"
    batch = task.sample(3, 2)
    [res] = run_ablations(m, task, batch, [AblationSpec(sites, "zero", steps=[t])])
    with torch.no_grad():
        clean, _ = run_with_sites(m, batch.inputs)
    assert torch.equal(res.logits[:, :t], clean[:, :t]) or (res.logits[:, :t] - clean[:, :t]).abs().max() < 1e-6
    assert float(res.prob_change_per_step[:t].abs().sum()) < 1e-6
    assert float(res.prob_change_per_step[t:].sum()) > 0  # and something changes from t on


def test_derangement_has_no_fixed_points():
    g = torch.Generator().manual_seed(0)
    for n in range(2, 9):
        d = derangement(n, g)
        assert sorted(d.tolist()) == list(range(n))
        assert (d != torch.arange(n)).all()


def test_result_fields_and_json(make_model, task):
    m = make_model("ntm", task)
    batch = task.sample(3, 0)
    [r] = run_ablations(m, task, batch, [AblationSpec(["memory.read"], "resample")])
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    for key in ("metric", "metric_clean", "metric_delta", "loss", "loss_clean", "metric_per_step",
                "loss_per_step", "prob_change", "kl", "flip_rate", "spec", "label"):
        assert key in d
    assert "logits" not in d
    assert d["spec"]["mode"] == "resample"


def test_bad_specs_are_clear(make_model, task):
    m = make_model("ntm", task)
    batch = task.sample(2, 0)
    with pytest.raises(ValueError, match="mode"):
        AblationSpec(["memory.read"], "shuffle")
    with pytest.raises(ValueError, match="outside the sequence"):
        run_ablations(m, task, batch, [AblationSpec(["memory.read"], "zero", steps=[99])])
    with pytest.raises(ValueError, match="no site"):
        run_ablations(m, task, batch, [AblationSpec(["memory.nope"], "zero")])
    with pytest.raises(ValueError, match="at least 2"):
        run_ablations(m, task, task.sample(1, 0), [AblationSpec(["memory.read"], "resample")])


def test_every_arch_every_mode(arch, make_model, task):
    m = make_model(arch, task)
    batch = task.sample(3, 0)
    sites = read_sites(m) or list(m.site_specs())[:1]
    res = run_ablations(m, task, batch, [AblationSpec(sites, mode) for mode in ("zero", "mean", "resample")])
    T = batch.inputs.shape[1]
    assert len(res) == 3 and all(r.metric_per_step.shape == (T,) for r in res)


def test_resample_and_mean_align_positions_by_role():
    """MQAR: a query's donor value is the donor's query of the same rank, never a filler, and
    the mean at a query is the mean over queries."""
    from mnemoscope.analysis.ablation import aligned_donors, aligned_mean, derangement, position_keys

    task = make_task("mqar", vocab_size=16, seq_len=32, num_pairs=3)
    batch = task.sample(6, 0)
    keys = position_keys(task, batch)
    donor = derangement(6, torch.Generator().manual_seed(0))
    rows, steps = aligned_donors(keys, keys, donor, exclude_self=True)
    assert (rows != torch.arange(6)[:, None]).all()
    assert torch.equal(batch.mask[rows, steps], batch.mask)  # queries from queries, the rest from the rest
    rank = batch.mask.long().cumsum(1)
    assert torch.equal(rank[rows, steps][batch.mask], rank[batch.mask])
    values = torch.arange(6 * 32, dtype=torch.float).view(6, 32, 1)
    mean = aligned_mean(values, keys, keys)
    first_queries = values[batch.mask & (rank == 1)].mean()
    assert torch.allclose(mean[batch.mask & (rank == 1)], first_queries.expand(6, 1))
    # without roles: the timestep's donor and mean, as before
    plain = make_task("copy", bits=3, min_length=3, max_length=3)
    b = plain.sample(4, 0)
    rows, steps = aligned_donors(position_keys(plain, b), position_keys(plain, b), donor[:4] % 4, exclude_self=False)
    assert torch.equal(steps, torch.arange(7).expand(4, 7))
