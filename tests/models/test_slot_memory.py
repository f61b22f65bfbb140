"""Slot memory (models/slot_memory.py): routing and forward against the loop references, causality,
the sites, loss-free balancing, and the block in the sequence stack."""
from __future__ import annotations

import pytest
import torch

from mnemoscope.models.sequence import SequenceConfig, SequenceModel
from mnemoscope.models.sites import Intervention, run_with_sites
from mnemoscope.models.slot_memory import SlotMemory, naive_route, naive_slot_memory, route


def _affinity(B: int, T: int, N: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(B, T, N, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("routing", ["expert_choice", "token_choice"])
@pytest.mark.parametrize("T,N,top_k,chunk", [(16, 4, 1, 4), (13, 5, 2, 4), (7, 3, 3, 8), (9, 6, 4, 1), (12, 2, 1, 12)])
def test_route_matches_the_loop(routing, T, N, top_k, chunk):
    a = _affinity(2, T, N, seed=T * 31 + N)
    bias = torch.randn(N, dtype=torch.float64) * 0.1 if routing == "token_choice" else None
    assert torch.equal(route(a, routing, top_k, chunk, bias), naive_route(a, routing, top_k, chunk, bias))


def test_expert_choice_gives_every_slot_top_k_tokens_per_chunk():
    a = _affinity(3, 20, 5, seed=1)
    mask = route(a, "expert_choice", 2, chunk=8)  # chunks of 8, 8 and 4 tokens
    per_chunk = torch.stack([mask[:, s:s + 8].sum(1) for s in (0, 8, 16)], dim=1)  # [B, chunks, N]
    assert (per_chunk == 2).all()
    # a token may go to several slots or none
    assert (mask.sum(-1) == 0).any() and (mask.sum(-1) > 1).any()


def test_token_choice_gives_every_token_top_k_slots_and_the_bias_steers_selection():
    a = _affinity(2, 10, 4, seed=2)
    assert (route(a, "token_choice", 2, chunk=4).sum(-1) == 2).all()
    bias = torch.tensor([0.0, 0.0, 0.0, 10.0], dtype=torch.float64)
    assert route(a, "token_choice", 1, chunk=4, bias=bias)[..., 3].all()


def test_a_bias_cannot_change_expert_choice():
    a = _affinity(2, 16, 4, seed=3)
    bias = torch.tensor([5.0, -5.0, 0.3, 0.0], dtype=torch.float64)
    assert torch.equal(route(a + bias, "expert_choice", 2, 4), route(a, "expert_choice", 2, 4))


@pytest.mark.parametrize("routing", ["expert_choice", "token_choice"])
@pytest.mark.parametrize("T,slots,top_k,chunk,conv", [(12, 4, 1, 4, 0), (11, 6, 2, 3, 3), (8, 3, 2, 8, 2), (5, 4, 1, 1, 0)])
def test_forward_matches_the_step_by_step_reference(routing, T, slots, top_k, chunk, conv):
    torch.manual_seed(T + slots)
    block = SlotMemory(8, slots=slots, width=6, top_k=top_k, routing=routing, chunk_size=chunk, conv_size=conv).double()
    block.balance_bias.copy_(torch.randn(slots, dtype=torch.float64) * 0.2)
    x = torch.randn(2, T, 8, dtype=torch.float64)
    torch.testing.assert_close(block(x), naive_slot_memory(block, x), rtol=1e-10, atol=1e-10)


def _stack(**over) -> SequenceModel:
    torch.manual_seed(0)
    config = dict(vocab_size=16, output_size=16, d_model=16, conv_size=3, slots=6, slot_chunk_size=4,
                  blocks=["slot_memory", "mlp"])
    return SequenceModel(SequenceConfig(**{**config, **over})).eval()


@pytest.mark.parametrize("routing", ["expert_choice", "token_choice"])
def test_outputs_at_t_do_not_depend_on_later_inputs(routing):
    model = _stack(routing=routing, slot_top_k=2)
    x = torch.randint(0, 16, (3, 14))
    y = model(x)
    for t in (2, 5, 9):  # inside a chunk, at its end, and in the middle of the sequence
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 16
        torch.testing.assert_close(model(changed)[:, :t + 1], y[:, :t + 1])
        assert not torch.allclose(model(changed)[:, t + 1:], y[:, t + 1:])


def test_writes_become_readable_at_the_next_chunk():
    model = _stack(slot_chunk_size=4)
    x = torch.randint(0, 16, (2, 12))
    _, trace = run_with_sites(model, x, record=["layers.0.memory.matrix"])
    M = trace["layers.0.memory.matrix"]  # [B, T, N, 2W]
    assert (M[:, :4] == 0).all()  # the first chunk reads empty slots
    assert torch.equal(M[:, 4], M[:, 7]) and not torch.equal(M[:, 7], M[:, 8])  # constant within a chunk


def test_sites_and_their_kinds_follow_the_other_slot_memories():
    model = _stack()
    specs = model.site_specs()
    assert specs["layers.0.memory.write_weights"].kind == "write_weights"
    assert specs["layers.0.memory.read_weights"].axes == ("head", "slot")
    assert specs["layers.0.memory.matrix"].on_request and specs["layers.0.memory.matrix"].axes == ("slot", "feature")
    assert specs["layers.0.slot_memory.out"].role == "memory"
    assert "layers.0.slot_memory.out" in model.block_sites("memory")
    assert model.memory_sites()[:4] == ["layers.0.memory.write_weights", "layers.0.memory.read_weights",
                                        "layers.0.memory.matrix", "layers.0.memory.read"]
    assert model.component_groups()["memory"] == ["layers.0.norm", "layers.0.mixer"]
    _, trace = run_with_sites(model, torch.randint(0, 16, (2, 10)), record="*")
    w, r = trace["layers.0.memory.write_weights"], trace["layers.0.memory.read_weights"]
    assert (w >= 0).all() and (w.sum(-1) <= 1 + 1e-6).all()
    torch.testing.assert_close(r.sum(-1), torch.ones_like(r.sum(-1)))


def test_zeroing_the_reads_removes_the_block_and_zeroing_writes_empties_the_slots():
    model = _stack()
    x = torch.randint(0, 16, (2, 12))
    _, trace = run_with_sites(model, x, record=["layers.0.slot_memory.out"],
                              interventions=[Intervention("layers.0.memory.read", 0.0)])
    assert (trace["layers.0.slot_memory.out"] == 0).all()
    _, trace = run_with_sites(model, x, record=["layers.0.memory.matrix"],
                              interventions=[Intervention("layers.0.memory.write_weights", 0.0)])
    assert (trace["layers.0.memory.matrix"] == 0).all()


def test_loss_free_balancing_moves_the_bias_towards_the_underloaded_slots_in_training_only():
    model = _stack(routing="token_choice", balance_bias_rate=0.01)
    block = model.layers[0].mixer
    x = torch.randint(0, 16, (4, 16))
    model.eval()
    model(x)
    assert (block.balance_bias == 0).all()  # analysis runs leave it alone
    model.train()
    with torch.no_grad():
        model(x)
    assert (block.balance_bias == 0).all()  # so do forward passes without gradients
    from mnemoscope.models.slot_memory import route as route_
    affinity = block.features(model.layers[0].norm(model.embed(x)))[0].detach()
    load = route_(affinity, "token_choice", 1, 4, block.balance_bias).flatten(0, 1).sum(0).float()
    model(x)
    expected = 0.01 * torch.sign(load.mean() - load)
    torch.testing.assert_close(block.balance_bias, expected)
    assert "layers.0.mixer.balance_bias" in model.state_dict()  # saved with the checkpoint


def test_loss_free_balancing_evens_the_load():
    torch.manual_seed(0)
    block = SlotMemory(8, slots=4, routing="token_choice", chunk_size=4, balance_bias_rate=0.02).train()
    with torch.no_grad():
        block.router.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0]))  # everyone prefers slot 0 (the last: no write)
    x = torch.randn(8, 16, 8)
    before = route(block.features(x)[0], "token_choice", 1, 4).flatten(0, 1).sum(0)
    for _ in range(200):
        block(x)
    after = route(block.features(x)[0].detach(), "token_choice", 1, 4, block.balance_bias).flatten(0, 1).sum(0)
    assert before.max() > 0.8 * before.sum()
    assert after.max() < 0.4 * after.sum()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="routing"):
        _stack(routing="hash")
    with pytest.raises(ValueError, match="balance_bias_rate"):
        _stack(balance_bias_rate=-1.0)


def test_train_cli_trains_a_slot_memory_with_token_choice_and_balancing(tmp_path):
    from mnemoscope.cli import main
    from mnemoscope.models.checkpoints import load_checkpoint

    out = tmp_path / "run"
    rc = main(["train", "--arch", "sequence", "--task", "mqar", "--task-param", "vocab_size=16",
               "--task-param", "seq_len=16", "--task-param", "num_pairs=2", "--steps", "3", "--batch-size", "4",
               "--model-param", 'blocks=["slot_memory", "mlp"]', "--model-param", "d_model=8",
               "--model-param", "slots=4", "--slot-routing", "token_choice", "--balance-bias-rate", "0.05",
               "--eval-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    ckpt = load_checkpoint(out / "final.safetensors")
    assert ckpt.meta.config["routing"] == "token_choice" and ckpt.meta.config["balance_bias_rate"] == 0.05
    bias = ckpt.model.layers[0].mixer.balance_bias
    # three steps of +-0.05 (or 0) per slot, saved with the weights
    assert bias.abs().sum() > 0 and bias.abs().max() <= 0.15 + 1e-6
    torch.testing.assert_close(bias / 0.05, (bias / 0.05).round())


def test_train_help_lists_the_slot_options(capsys):
    from mnemoscope.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--slot-routing" in text and "--balance-bias-rate" in text


def test_the_analyses_and_the_explore_page_pick_up_the_slot_sites():
    from mnemoscope.analysis.entropy import weight_entropy
    from mnemoscope.analysis.utilization import utilization
    from mnemoscope.dashboard.explore_data import site_roles
    from mnemoscope.models.tasks import make_task

    task = make_task({"name": "mqar", "params": {"vocab_size": 16, "seq_len": 16, "num_pairs": 2}})
    model = _stack(output_size=task.output_size)
    batch = task.sample(4, seed=0)
    usage = utilization(model, task, batch)
    assert [s.name for s in usage.slots] == ["layers.0.memory.write_weights", "layers.0.memory.read_weights"]
    assert usage.slots[0].slots == 6
    matrix = [s for s in usage.states if s.name == "layers.0.memory.matrix"]
    assert matrix and matrix[0].distinct_axis == "slot"
    assert {s.name for s in weight_entropy(model, task, batch).sites} >= {"layers.0.memory.write_weights",
                                                                            "layers.0.memory.read_weights"}
    roles = site_roles([s.to_dict() for s in model.site_specs().values()], layer=0)
    assert roles["read"] == ["layers.0.memory.read_weights"] and roles["write"] == ["layers.0.memory.write_weights"]
    assert roles["matrix"] == ["layers.0.memory.matrix"]
