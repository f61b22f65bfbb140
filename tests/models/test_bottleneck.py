"""The bypass bottleneck (models/bottleneck.py): the KL against its closed form, the code's
mean at evaluation, the architectures' wiring, the training loop's KL term, the CLI and
checkpoints."""
import json
import math

import pytest
import torch

from mnemoscope.cli import main
from mnemoscope.models import build_model
from mnemoscope.models.bottleneck import VariationalBottleneck, bottleneck_penalty, gaussian_kl
from mnemoscope.models.checkpoints import load_checkpoint, save_checkpoint
from mnemoscope.models.registry import architecture
from mnemoscope.models.remedies import config_remedies
from mnemoscope.models.sites import Intervention, hooks
from mnemoscope.models.tasks import make_task
from mnemoscope.models.training import TrainConfig, train

COPY = make_task("copy", bits=3, min_length=1, max_length=3)


def ntm(**kw):
    torch.manual_seed(0)
    return build_model("ntm", dict(input_size=COPY.input_size, output_size=COPY.output_size, controller_size=8,
                                   memory_slots=4, memory_width=4, memory_init="random", **kw))


def dnc(**kw):
    torch.manual_seed(0)
    return build_model("dnc", dict(input_size=COPY.input_size, output_size=COPY.output_size, controller_size=8,
                                   memory_slots=4, memory_width=4, read_heads=1, **kw))


def hybrid(blocks=("memory", "attention"), **kw):
    torch.manual_seed(0)
    return build_model("sequence", dict(vocab_size=13, output_size=13, d_model=8, heads=2, blocks=list(blocks),
                                        window=4, **kw))


def test_kl_matches_the_closed_form():
    # KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2, by hand:
    #   mu = 0.5, s = 2:   -log 2 + (4 + 0.25)/2 - 0.5  = 0.931853
    #   mu = -1,  s = 0.5:  log 2 + (0.25 + 1)/2 - 0.5  = 0.818147
    #   mu = 0,   s = 1:    0
    mu = torch.tensor([0.5, -1.0, 0.0])
    sigma = torch.tensor([2.0, 0.5, 1.0])
    by_hand = torch.tensor([-math.log(2) + 2.125 - 0.5, math.log(2) + 0.625 - 0.5, 0.0])
    assert torch.allclose(gaussian_kl(mu, sigma.log()), by_hand, atol=1e-6)
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma),
                                                  torch.distributions.Normal(0.0, 1.0))
    assert torch.allclose(gaussian_kl(mu, sigma.log()), reference, atol=1e-6)


def known_code(width=3, beta=0.25):
    """A bottleneck whose code ignores h: mu = (0.5, -1, 0), sigma = (2, 0.5, 1)."""
    b = VariationalBottleneck(width, beta)
    with torch.no_grad():
        b.encode.weight.zero_()
        b.encode.bias.copy_(torch.tensor([0.5, -1.0, 0.0, math.log(2), math.log(0.5), 0.0]))
    return b


def test_module_kl_is_summed_over_features_and_averaged_over_calls_and_rows():
    b = known_code()
    b.train()
    h = torch.randn(5, 3)
    torch.manual_seed(7)
    z = b(h)
    torch.manual_seed(7)
    eps = torch.randn(5, 3)
    assert torch.allclose(z, torch.tensor([0.5, -1.0, 0.0]) + torch.tensor([2.0, 0.5, 1.0]) * eps)  # reparameterised
    per_code = (-math.log(2) + 2.125 - 0.5) + (math.log(2) + 0.625 - 0.5) + 0.0  # 1.75
    assert b.kl.item() == pytest.approx(per_code, abs=1e-6)
    b(torch.randn(5, 3))  # a second time step: the mean over calls
    assert b.kl.item() == pytest.approx(per_code, abs=1e-6)
    penalty, kl = bottleneck_penalty(torch.nn.Sequential(b))
    assert penalty.item() == pytest.approx(0.25 * per_code, abs=1e-6) and kl.item() == pytest.approx(per_code, abs=1e-6)
    b.reset()
    assert b.kl is None and bottleneck_penalty(torch.nn.Sequential(b)) is None


def test_evaluation_uses_the_codes_mean_and_no_kl():
    b = known_code()
    b.eval()
    z = b(torch.randn(4, 3))
    assert torch.equal(z, torch.tensor([[0.5, -1.0, 0.0]]).expand(4, 3))
    assert b.kl is None


@pytest.mark.parametrize("make", [ntm, dnc])
def test_recurrent_models_are_deterministic_at_eval_and_noisy_in_training(make):
    m = make(bypass_bottleneck=0.1)
    x = COPY.sample(4, seed=0).inputs
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(x), m(x))  # z = mu + sigma * eps in training


@pytest.mark.parametrize("make", [ntm, dnc])
def test_an_identity_code_at_eval_leaves_the_model_unchanged(make):
    """With mu = h the bottleneck is transparent at evaluation: the same outputs as the model
    without it (same weights elsewhere)."""
    plain, coded = make(), make(bypass_bottleneck=0.1)
    coded.load_state_dict(plain.state_dict(), strict=False)
    H = coded.config.controller_size
    with torch.no_grad():
        coded.bottleneck.encode.weight.zero_()
        coded.bottleneck.encode.weight[:H].copy_(torch.eye(H))
        coded.bottleneck.encode.bias.zero_()
    plain.eval(), coded.eval()
    x = COPY.sample(4, seed=1).inputs
    with torch.no_grad():
        assert torch.allclose(plain(x), coded(x), atol=1e-6)


@pytest.mark.parametrize("make", [ntm, dnc])
def test_the_bypass_site_carries_the_code_so_ablations_still_find_it(make):
    m = make(bypass_bottleneck=0.1).eval()
    x = COPY.sample(4, seed=2).inputs
    with torch.no_grad():
        with hooks(m, record=["controller.output"]) as trace:
            clean = m(x)
        mu = trace["controller.output"]
        with hooks(m, interventions=[Intervention("controller.output", 0.0)]):
            ablated = m(x)
    # the output layer sees [code ; reads] and the reads do not depend on the code (the recurrence
    # keeps h): zeroing the site removes exactly the code's share of the logits
    H = m.config.controller_size
    out = m.fc if hasattr(m, "fc") else m.head
    assert torch.allclose(clean - ablated, torch.einsum("bth,oh->bto", mu, out.weight[:, :H]), atol=1e-5)
    assert m.site_specs()["controller.output"].role == "bypass"


def test_sequence_bottleneck_sits_on_attention_blocks_only():
    m = hybrid(("memory", "attention", "mlp"), bypass_bottleneck=0.05)
    assert set(m.bottlenecks) == {"1"}
    groups = m.component_groups()
    assert "bottlenecks.1" in groups["attention"]
    for name, _ in m.named_parameters():
        owners = [g for g, prefixes in groups.items() if any(name == p or name.startswith(p + ".") for p in prefixes)]
        assert len(owners) == 1, (name, owners)
    x = torch.randint(0, 13, (3, 6))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
    m.train()
    m(x)
    penalty, kl = bottleneck_penalty(m)
    assert kl.item() > 0 and penalty.item() == pytest.approx(0.05 * kl.item())


def test_sequence_without_a_parallel_path_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a path parallel to memory"):
        hybrid(("memory", "mlp"), bypass_bottleneck=0.1)


def test_off_by_default_and_old_configs_build_the_same_model():
    for make in (ntm, dnc, hybrid):
        plain, zero = make(), make(bypass_bottleneck=0.0)
        assert plain.config.bypass_bottleneck is None
        assert list(plain.state_dict()) == list(zero.state_dict())
        assert not any("bottleneck" in k for k in plain.state_dict())
    with pytest.raises(ValueError, match="bypass_bottleneck"):
        ntm(bypass_bottleneck=-1.0)


def test_config_remedies_maps_the_option():
    assert config_remedies(architecture("ntm").Config, "ntm", bypass_bottleneck=0.1) == {"bypass_bottleneck": 0.1}
    assert config_remedies(architecture("dnc").Config, "dnc", bypass_bottleneck=0.0) == {}  # 0: off
    with pytest.raises(ValueError, match="'lstm' has no 'bypass_bottleneck'"):
        config_remedies(architecture("lstm").Config, "lstm", bypass_bottleneck=0.1)


def test_training_adds_the_kl_and_logs_it():
    m = ntm(bypass_bottleneck=0.5)
    r = train(m, COPY, TrainConfig(steps=6, eval_every=3, batch_size=4, eval_size=4, progress=False))
    assert r.history[0]["bottleneck_kl"] is None  # no training step yet
    kls = [e["bottleneck_kl"] for e in r.history[1:]]
    assert all(math.isfinite(k) and k > 0 for k in kls)
    assert not m.training
    plain = train(ntm(), COPY, TrainConfig(steps=2, batch_size=4, eval_size=4, progress=False))
    assert "bottleneck_kl" not in plain.history[-1]


def test_a_heavy_penalty_squeezes_the_code():
    """beta * KL is in the loss: with a large beta and nothing else to gain the KL falls."""
    m = ntm(bypass_bottleneck=50.0)
    r = train(m, COPY, TrainConfig(steps=40, eval_every=10, batch_size=4, eval_size=4, lr=1e-2, progress=False))
    assert r.history[-1]["bottleneck_kl"] < 0.5 * r.history[1]["bottleneck_kl"]


def test_checkpoint_round_trip_keeps_the_bottleneck(tmp_path):
    m = dnc(bypass_bottleneck=0.1).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", m, task=COPY.spec())
    loaded = load_checkpoint(path)
    assert loaded.meta.config["bypass_bottleneck"] == 0.1
    x = COPY.sample(3, seed=3).inputs
    with torch.no_grad():
        assert torch.equal(loaded.model(x), m(x))


def test_train_cli_bypass_bottleneck(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--arch", "ntm", "--task", "copy", "--task-param", "max_length=2", "--task-param", "bits=3",
               "--steps", "2", "--controller-size", "8", "--model-param", "memory_slots=4",
               "--model-param", "memory_width=4", "--bypass-bottleneck", "0.1", "--eval-size", "4",
               "--batch-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    ckpt = load_checkpoint(out / "final.safetensors")
    assert ckpt.meta.config["bypass_bottleneck"] == 0.1
    history = json.loads((out / "history.json").read_text())
    assert history["history"][-1]["bottleneck_kl"] > 0
