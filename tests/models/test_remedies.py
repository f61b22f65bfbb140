"""Remedies: the reconstruction loss against a step-by-step reference, its training hook,
the config remedies and their `mnemoscope train` options."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.registry import build_model
from mnemoscope.models.remedies import (
    REMEDIES,
    ReconstructionLoss,
    config_remedies,
    read_site_names,
    reconstruction_loss,
)
from mnemoscope.models.sites import run_with_sites
from mnemoscope.models.tasks import make_task
from mnemoscope.models.training import TrainConfig, train
from mnemoscope.cli import main


def tiny_ntm(task, **extra):
    torch.manual_seed(0)
    return build_model("ntm", {"input_size": task.input_size, "output_size": task.output_size,
                               "controller_size": 8, "memory_slots": 6, "memory_width": 5, **extra})


def tiny_sequence(task, **extra):
    torch.manual_seed(0)
    return build_model("sequence", {"vocab_size": task.vocab_size, "output_size": task.output_size,
                                    "d_model": 8, "heads": 2, "blocks": ["memory", "mlp"], **extra})


def reference(loss: ReconstructionLoss, reads: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """One (sequence, step, offset) at a time: the decoder's guess at x[t-k] from the reads at t."""
    B, T, _ = reads.shape
    total, count = 0.0, 0
    for b in range(B):
        for t in range(T):
            guess = loss.decoder(reads[b, t]).view(loss.horizon, loss.input_dim)
            for k in range(1, loss.horizon + 1):
                if t - k < 0:
                    continue
                target = inputs[b, t - k]
                if loss.target == "tokens":
                    term = F.cross_entropy(guess[k - 1][None], target.long()[None])
                elif loss.target == "bits":
                    term = F.binary_cross_entropy_with_logits(guess[k - 1], target.float(), reduction="sum")
                else:
                    term = ((guess[k - 1] - target.float()) ** 2).sum()
                total = total + term
                count += 1
    return loss.weight * total / count


@pytest.mark.parametrize("horizon", [1, 3, 20])
def test_reconstruction_matches_reference_on_bits(horizon):
    task = make_task("copy", min_length=2, max_length=4, bits=3)
    model = tiny_ntm(task)
    loss = reconstruction_loss(model, task, horizon=horizon, hidden=7, weight=0.5)
    assert loss.sites == ["memory.read"] and loss.target == "bits" and loss.input_dim == task.input_size
    batch = task.sample(3, seed=1)
    logits, trace = run_with_sites(model, batch.inputs, record=loss.sites, keep_grad=True)
    got = loss(model, batch, logits, trace)
    want = reference(loss, loss.reads(trace), batch.inputs)
    assert torch.allclose(got, want, atol=1e-5), (got, want)


@pytest.mark.parametrize("horizon", [1, 4])
def test_reconstruction_matches_reference_on_tokens(horizon):
    task = make_task("mqar", vocab_size=16, seq_len=12, num_pairs=2)
    model = tiny_sequence(task)
    loss = reconstruction_loss(model, task, horizon=horizon, hidden=5)
    # every read site of the stack, in declaration order: the layer's read and its residual contribution
    assert loss.sites == read_site_names(model) and "layers.0.memory.out" in loss.sites
    assert loss.target == "tokens" and loss.input_dim == 16
    batch = task.sample(2, seed=3)
    logits, trace = run_with_sites(model, batch.inputs, record=loss.sites, keep_grad=True)
    got = loss(model, batch, logits, trace)
    assert torch.allclose(got, reference(loss, loss.reads(trace), batch.inputs), atol=1e-5)


def test_real_valued_inputs_use_squared_error():
    loss = ReconstructionLoss(["r"], [4], input_dim=3, target="real", horizon=2, hidden=5)
    reads = torch.randn(2, 5, 4)
    inputs = torch.randn(2, 5, 3)

    class FakeTrace(dict):
        pass

    trace = FakeTrace(r=reads)
    batch = make_task("copy").sample(2, seed=0)
    batch.inputs = inputs
    got = loss(None, batch, None, trace)
    assert torch.allclose(got, reference(loss, reads, inputs), atol=1e-5)


def test_gradient_reaches_the_memory_path_and_the_decoder():
    task = make_task("copy", min_length=3, max_length=3, bits=3)
    model = tiny_ntm(task)
    loss = reconstruction_loss(model, task, horizon=3)
    batch = task.sample(4, seed=0)
    logits, trace = run_with_sites(model, batch.inputs, record=loss.sites, keep_grad=True)
    loss(model, batch, logits, trace).backward()
    assert model.read_head.weight.grad is not None and model.read_head.weight.grad.abs().sum() > 0
    assert model.write_head.weight.grad.abs().sum() > 0  # what is read was written
    assert loss.decoder[0].weight.grad.abs().sum() > 0
    assert model.fc.weight.grad is None  # the output layer is not part of this loss


def test_train_trains_the_decoder_with_the_model_and_lowers_the_loss():
    task = make_task("copy", min_length=2, max_length=2, bits=3)
    model = tiny_ntm(task)
    loss = reconstruction_loss(model, task, horizon=2, hidden=16)
    before = loss.decoder[0].weight.detach().clone()
    result = train(model, task, TrainConfig(steps=40, lr=1e-2, progress=False, eval_every=20),
                   extra_loss=loss, record=loss.sites)
    assert not torch.equal(before, loss.decoder[0].weight)
    first, last = result.history[1]["extra_loss"], result.history[-1]["extra_loss"]
    assert last < first, result.history
    assert "ReconstructionLoss" in result.config["extra_loss"] and "Trinh" in result.config["extra_loss"]
    assert "\n" not in result.config["extra_loss"]


def test_short_sequences_and_bad_arguments():
    task = make_task("copy", min_length=1, max_length=1, bits=3)
    model = tiny_ntm(task)
    loss = reconstruction_loss(model, task, horizon=5)
    batch = task.sample(2, seed=0)
    batch.inputs = batch.inputs[:, :1]  # one step: nothing earlier to reconstruct
    logits, trace = run_with_sites(model, batch.inputs, record=loss.sites, keep_grad=True)
    assert float(loss(model, batch, logits, trace).detach()) == 0.0
    with pytest.raises(ValueError, match="not recorded"):
        _, empty = run_with_sites(model, batch.inputs, record=[])
        loss(model, batch, logits, empty)
    with pytest.raises(ValueError, match="horizon"):
        reconstruction_loss(model, task, horizon=0)
    with pytest.raises(ValueError, match="negative"):
        reconstruction_loss(model, task, weight=-1)
    lstm = build_model("lstm", {"input_size": task.input_size, "output_size": task.output_size, "hidden_size": 4})
    with pytest.raises(ValueError, match="no memory read sites"):
        reconstruction_loss(lstm, task)


def test_config_remedies():
    from mnemoscope.models.registry import architecture

    assert config_remedies(architecture("ntm").Config, "ntm", bypass_dropout=0.5, controller_size=16,
                           memory_init="constant") == {"bypass_dropout": 0.5, "controller_size": 16,
                                                       "memory_init": "constant"}
    assert config_remedies(architecture("dnc").Config, "dnc", dnc_fixes=True) == {
        "masking": True, "deallocation": True, "sharpness": True}
    assert config_remedies(architecture("sequence").Config, "sequence", window=4) == {"window": 4}
    with pytest.raises(ValueError, match="'lstm' has no 'bypass_dropout'"):
        config_remedies(architecture("lstm").Config, "lstm", bypass_dropout=0.5)
    with pytest.raises(ValueError, match="memory_init"):
        config_remedies(architecture("dnc").Config, "dnc", memory_init="constant")


def test_every_remedy_names_its_source_and_option():
    names = {r.name for r in REMEDIES}
    assert {"reconstruction", "bypass_dropout", "small_controller", "curriculum", "ntm_stabilisers",
            "dnc_fixes", "short_window"} <= names
    for r in REMEDIES:
        assert r.source and r.what and r.how.startswith("--")


def test_train_cli_remedy_options(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--arch", "ntm", "--task", "copy", "--task-param", "max_length=2", "--task-param", "bits=3",
               "--steps", "2", "--controller-size", "8", "--model-param", "memory_slots=4",
               "--model-param", "memory_width=4", "--bypass-dropout", "0.5", "--reconstruction-loss", "0.3",
               "--reconstruction-horizon", "2", "--eval-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    ckpt = load_checkpoint(out / "final.safetensors")
    assert ckpt.meta.config["bypass_dropout"] == 0.5 and ckpt.meta.config["controller_size"] == 8
    assert "ReconstructionLoss" in ckpt.meta.extra["train"]["extra_loss"]
    assert ckpt.meta.extra["train"]["record"] == ["memory.read"]
    history = json.loads((out / "history.json").read_text())
    assert history["history"][-1]["extra_loss"] is not None


def test_train_cli_rejects_remedies_an_architecture_lacks(tmp_path, capsys):
    rc = main(["train", "--arch", "lstm", "--task", "copy", "--steps", "1", "--bypass-dropout", "0.5",
               "--out", str(tmp_path / "a")])
    assert rc == 2 and "'lstm' has no 'bypass_dropout'" in capsys.readouterr().err
    rc = main(["train", "--arch", "lstm", "--task", "copy", "--steps", "1", "--reconstruction-loss", "1",
               "--out", str(tmp_path / "b")])
    assert rc == 2 and "no memory read sites" in capsys.readouterr().err
    rc = main(["train", "--arch", "ntm", "--task", "copy", "--steps", "1", "--model-param", "controller_size=9",
               "--controller-size", "8", "--out", str(tmp_path / "c")])
    assert rc == 2 and "disagrees" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
