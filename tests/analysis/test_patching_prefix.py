"""Prefix-reuse patching (patched runs resumed from the base run's per-step states) equals
the full batched sweep, for every site and timestep, in both directions."""
import pytest
import torch

import mnemoscope.analysis.patching as patching
from mnemoscope.analysis.patching import patch_sweep
from mnemoscope.analysis.prefix import resumed_runs
from mnemoscope.models.registry import build_model
from mnemoscope.models.tasks import make_task

COPY = make_task("copy", bits=3, min_length=3, max_length=5)
MODELS = {
    "ntm": ("ntm", dict(controller_size=8, memory_slots=8, memory_width=4)),
    "dnc": ("dnc", dict(controller_size=8, memory_slots=6, memory_width=4, read_heads=2)),
    "lstm": ("lstm", dict(hidden_size=8, num_layers=2)),
    "linear-memory stack": ("sequence", dict(d_model=16, heads=2, blocks=["memory", "mlp", "memory", "mlp"],
                                             rule="gated_delta", conv_size=3, chunk_size=4)),
}


def _model(name, task=COPY):
    arch, config = MODELS[name]
    torch.manual_seed(0)
    return build_model(arch, dict(input_size=task.input_size, output_size=task.output_size, **config)).eval()


@pytest.fixture
def resumes(monkeypatch):
    """How many resumed batches each sweep ran: proof that prefix reuse was used."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[4])  # the blocks' start steps
        return resumed_runs(*args, **kwargs)

    monkeypatch.setattr(patching, "resumed_runs", spy)
    return calls


def _assert_equal(prefix, full):
    assert prefix.sites == full.sites and prefix.skipped == full.skipped
    for a, b in ((prefix.patched, full.patched), (prefix.scores, full.scores)):
        assert torch.equal(torch.isnan(a), torch.isnan(b))
    cells = ~torch.isnan(full.patched)
    assert float((prefix.patched[cells] - full.patched[cells]).abs().max()) < 1e-5
    # recovery divides by S_clean - S_corrupted, tiny in untrained models: compare it in those units
    gap = min(1.0, abs(full.score_clean - full.score_corrupted))
    assert float((prefix.scores[cells] - full.scores[cells]).abs().max()) * gap < 1e-5
    if full.all_steps is not None:
        assert max(abs(a - b) for a, b in zip(prefix.all_steps, full.all_steps)) * gap < 1e-5


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_prefix_reuse_equals_the_full_sweep(name, direction, resumes):
    model = _model(name)
    pair = COPY.patch_pairs(4, 0)
    prefix = patch_sweep(model, COPY, pair, direction=direction)  # resumes where it can, by default
    starts = [s for call in resumes for s in call]
    assert starts and max(starts) > 0  # resumed runs, from more than the initial state
    full = patch_sweep(model, COPY, pair, direction=direction, prefix_reuse=False)
    assert len(resumes) == 1
    _assert_equal(prefix, full)


def test_prefix_reuse_on_the_real_ntm_with_chunks_and_elements(ntm, resumes):
    task = make_task("copy", min_length=4, max_length=6)
    pair = task.patch_pairs(3, 1)
    sites = ["memory.read", "memory.write_weights", "controller.output", "controller.state"]
    prefix = patch_sweep(ntm, task, pair, sites, memory_budget_mb=0.05)  # several chunks
    assert len(resumes) > 1
    _assert_equal(prefix, patch_sweep(ntm, task, pair, sites, prefix_reuse=False))
    assert prefix.score_clean > 5 > -5 > prefix.score_corrupted  # a real effect, compared in full units
    by_head = patch_sweep(ntm, task, pair, ["memory.read_weights"], per_element="slot")
    _assert_equal(by_head, patch_sweep(ntm, task, pair, ["memory.read_weights"], per_element="slot",
                                       prefix_reuse=False))


def test_prefix_reuse_on_a_token_task(resumes):
    task = make_task("mqar", vocab_size=16, seq_len=16, num_pairs=2)
    torch.manual_seed(0)
    model = build_model("sequence", dict(vocab_size=16, output_size=16, d_model=16, heads=2,
                                         blocks=["memory", "mlp"], rule="delta")).eval()
    pair = task.patch_pairs(3, 0)
    prefix = patch_sweep(model, task, pair, direction="noise")
    assert resumes
    _assert_equal(prefix, patch_sweep(model, task, pair, direction="noise", prefix_reuse=False))


def test_models_and_sites_that_cannot_resume_fall_back(resumes):
    torch.manual_seed(0)
    hybrid = build_model("sequence", dict(input_size=COPY.input_size, output_size=COPY.output_size, d_model=16,
                                          heads=2, blocks=["memory", "attention"], window=3)).eval()
    pair = COPY.patch_pairs(2, 0)
    patch_sweep(hybrid, COPY, pair, ["layers.0.memory.out"])
    with pytest.raises(ValueError, match="no resume API"):
        patch_sweep(hybrid, COPY, pair, ["layers.0.memory.out"], prefix_reuse=True)
    stack = _model("linear-memory stack")
    growing = ["layers.0.memory.attention"]  # over every earlier key: not one step's value
    patch_sweep(stack, COPY, pair, growing)
    with pytest.raises(ValueError, match="span every earlier step"):
        patch_sweep(stack, COPY, pair, growing, prefix_reuse=True)
    assert not resumes


def test_resumed_blocks_must_come_in_order():
    model = _model("ntm")
    pair = COPY.patch_pairs(3, 0)
    logits, _, states = model.run_steps(pair.clean.inputs, keep_states=True)
    every = torch.arange(3)
    with pytest.raises(ValueError, match="order"):
        resumed_runs(model, pair.clean.inputs, states, logits, [2, 1], [every, every], logits.shape[1])
    # unpatched blocks of any pairs, resumed anywhere, reproduce the base run's rows
    rows = [every, torch.tensor([2]), torch.tensor([1, 0])]
    again = resumed_runs(model, pair.clean.inputs, states, logits, [0, 3, 3], rows, logits.shape[1])
    assert torch.allclose(again, logits[torch.cat(rows)], atol=1e-6)


def test_a_patch_runs_only_for_the_pairs_it_changes(monkeypatch):
    """Pairs whose source equals the base value at a cell are not resumed there, and keep
    the base run's score exactly."""
    rows = []

    def count(*args, **kwargs):
        rows.append(sum(len(r) for r in args[5]))
        return resumed_runs(*args, **kwargs)

    monkeypatch.setattr(patching, "resumed_runs", count)
    task = make_task("copy", bits=3, min_length=6, max_length=6)
    pair = task.patch_pairs(4, 2)
    model = _model("ntm", task)
    prefix = patch_sweep(model, task, pair, ["memory.read"])
    run = len(prefix.sites) * (pair.clean.mask.shape[1] + 1) - prefix.skipped  # variants run
    assert sum(rows) < run * 4  # fewer rows than every pair of every variant
    _assert_equal(prefix, patch_sweep(model, task, pair, ["memory.read"], prefix_reuse=False))
