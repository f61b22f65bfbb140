"""Training: loss goes down, checkpoint series, determinism, curriculum, extra-loss hooks, CLI."""
from dataclasses import dataclass

import pytest
import torch

from mnemoscope.models import build_model
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.tasks import make_task
from mnemoscope.models.tasks.base import Batch, BitsTask, generator
from mnemoscope.models.training import LengthCurriculum, TrainConfig, train
from mnemoscope.cli import main


@dataclass
class EchoParams:
    bits: int = 2
    min_length: int = 1
    max_length: int = 4


class Echo(BitsTask):
    """Output at t is the input bits at t-1: a one-step memory, learnable in a few steps."""

    name = "echo"
    Params = EchoParams

    def __init__(self, params=None, **kw):
        super().__init__(params, **kw)
        self.lengths: list[int] = []  # every length sampled, for curriculum tests

    @property
    def input_size(self):
        return self.params.bits

    @property
    def output_size(self):
        return self.params.bits

    def sample(self, n, seed):
        g = generator(seed)
        L = int(torch.randint(self.params.min_length, self.params.max_length + 1, (1,), generator=g))
        self.lengths.append(L)
        x = torch.randint(0, 2, (n, L + 1, self.params.bits), generator=g).float()
        y = torch.zeros_like(x)
        y[:, 1:] = x[:, :-1]
        mask = torch.ones(n, L + 1, dtype=torch.bool)
        mask[:, 0] = False
        return Batch(x, y, mask)


def lstm(seed=0, hidden=8):
    torch.manual_seed(seed)
    return build_model("lstm", dict(input_size=2, output_size=2, hidden_size=hidden))


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_goes_down():
    model = lstm()
    r = train(model, Echo(), TrainConfig(steps=40, lr=2e-2, eval_every=10, progress=False))
    assert [h["step"] for h in r.history] == [0, 10, 20, 30, 40]
    assert r.history[-1]["loss"] < 0.7 * r.history[0]["loss"]
    assert r.history[-1]["wrong_bits"] < r.history[0]["wrong_bits"]
    assert r.final_metrics["wrong_bits"] == r.history[-1]["wrong_bits"] == r.metric
    assert r.steps == 40 and r.seconds > 0 and r.checkpoints == [] and r.final_checkpoint is None


def test_checkpoint_series_each_loads_back_with_identical_outputs(tmp_path):
    model = lstm()
    x = torch.randn(3, 5, 2)
    outputs = {}

    def snapshot(entry):  # called at each eval, which runs before that step's checkpoint is written
        model.eval()
        with torch.no_grad():
            outputs[entry["step"]] = model(x)

    task = Echo()
    r = train(model, task, TrainConfig(steps=6, checkpoint_every=2, out_dir=tmp_path, eval_every=100,
                                       progress=False, name="echo-run"), on_eval=snapshot)
    names = [p.name for p in r.checkpoints]
    assert names == ["step-000002.safetensors", "step-000004.safetensors", "step-000006.safetensors", "final.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp files left over
    assert r.final_checkpoint == tmp_path / "final.safetensors"
    for path, step in zip(r.checkpoints, [2, 4, 6, 6]):
        ckpt = load_checkpoint(path)
        assert ckpt.meta.step == step
        assert ckpt.meta.name == "echo-run"
        assert ckpt.meta.task == task.spec()
        assert set(ckpt.meta.metrics) >= {"loss", "wrong_bits", "train_loss"}
        assert ckpt.meta.extra["train"]["batch_size"] == 16
        with torch.no_grad():
            assert torch.equal(ckpt.model(x), outputs[step])
    # the series really is a series: weights changed between checkpoints
    assert not torch.equal(outputs[2], outputs[6])


def test_same_seed_same_weights_other_seed_other_weights():
    runs = {}
    for key, seed in [("a", 3), ("b", 3), ("c", 4)]:
        model = lstm()
        train(model, Echo(), TrainConfig(steps=8, seed=seed, progress=False, curriculum=True))
        runs[key] = state(model)
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_rmsprop_and_norm_clipping_run():
    model = lstm()
    r = train(model, Echo(), TrainConfig(steps=5, optimizer="rmsprop", lr=1e-3, clip=None, clip_norm=0.1,
                                         progress=False))
    assert r.config["optimizer"] == "rmsprop" and r.config["clip_norm"] == 0.1
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(lstm(), Echo(), TrainConfig(steps=1, optimizer="sgdd", progress=False))


def test_cosine_learning_rate_decay():
    r = train(lstm(), Echo(), TrainConfig(steps=10, lr=1e-2, min_lr=1e-4, eval_every=5, progress=False))
    lrs = [h["lr"] for h in r.history]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-4)
    assert 1e-4 < lrs[1] < 1e-2


def test_length_curriculum_schedule():
    params = EchoParams(min_length=2, max_length=10)
    c = LengthCurriculum(fraction=0.5)
    values = [c.overrides(s, 100, params)["max_length"] for s in range(100)]
    assert values[0] == 2 and values[50] == 10 and values[-1] == 10
    assert values == sorted(values)  # short sequences first, never shrinking
    assert 5 <= values[25] <= 7
    assert LengthCurriculum(start=4, end=6, fraction=1.0).overrides(0, 10, params) == {"max_length": 4}
    with pytest.raises(ValueError, match="no parameter 'max_items'"):
        LengthCurriculum(param="max_items").overrides(0, 10, params)


def test_curriculum_drives_the_sampled_lengths():
    task = Echo(EchoParams(min_length=1, max_length=8))
    seen = []
    original = Echo.sample

    def spy(self, n, seed):
        batch = original(self, n, seed)
        seen.append(self.params.max_length)
        return batch

    Echo.sample = spy
    try:
        r = train(lstm(), task, TrainConfig(steps=20, curriculum=True, eval_every=10, progress=False))
    finally:
        Echo.sample = original
    train_caps = seen[1:]  # seen[0] is the eval batch, drawn from the task as given
    assert seen[0] == 8
    assert train_caps[0] == 1 and train_caps[-1] == 8 and train_caps == sorted(train_caps)
    assert r.history[1]["curriculum"]["max_length"] < 8


def test_curriculum_as_a_function():
    calls = []

    def schedule(step, steps):
        calls.append((step, steps))
        return {"max_length": 1 if step < 2 else 3}

    task = Echo()
    train(lstm(), task, TrainConfig(steps=4, curriculum=schedule, progress=False))
    assert calls[-4:] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    with pytest.raises(ValueError, match="no parameter"):
        train(lstm(), task, TrainConfig(steps=1, curriculum=lambda s, n: {"lenght": 2}, progress=False))


def test_extra_loss_sees_recorded_sites_with_gradients():
    seen = []

    def aux(model, batch, logits, trace):
        h = trace["controller.output"]
        seen.append((h.requires_grad, tuple(h.shape), len(batch)))
        return 10.0 * h.pow(2).mean()

    plain, hooked = lstm(), lstm()
    options = TrainConfig(steps=5, progress=False)
    train(plain, Echo(), options)
    r = train(hooked, Echo(), options, extra_loss=aux, record=["controller.output"])
    assert len(seen) == 5 and all(grad for grad, _, _ in seen)
    assert seen[0][2] == 16
    assert r.history[-1]["extra_loss"] > 0
    assert hooked._bus is None  # hooks detached after training
    assert not all(torch.equal(a, b) for a, b in zip(state(plain).values(), state(hooked).values()))


def test_non_finite_loss_stops_with_a_clear_error():
    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        train(lstm(), Echo(), TrainConfig(steps=3, progress=False),
              extra_loss=lambda m, b, logits, t: torch.tensor(float("nan")))


def test_target_stops_early():
    r = train(lstm(), Echo(), TrainConfig(steps=50, eval_every=5, target=1e9, progress=False))
    assert r.steps == 5 and r.history[-1]["step"] == 5


@pytest.mark.parametrize("options, message", [
    (dict(steps=-1), "steps must be >= 0"),
    (dict(steps=1, batch_size=0), "batch_size must be >= 1"),
    (dict(steps=1, checkpoint_every=0, out_dir="x"), "checkpoint_every must be >= 1"),
    (dict(steps=1, checkpoint_every=1), "checkpoint_every needs out_dir"),
])
def test_config_errors(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_config_is_the_one_place_for_options():
    with pytest.raises(TypeError):
        TrainConfig(steps=1, epochs=3)
    with pytest.raises(TypeError):
        train(lstm(), Echo(), steps=1)  # options go through the TrainConfig only
    config = TrainConfig(steps=1)
    with pytest.raises(AttributeError):
        config.steps = 2  # frozen: one config trains the same way every time it is used


def test_device_errors():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train(lstm(), Echo(), TrainConfig(steps=1, device="cuda", progress=False))
    with pytest.raises(ValueError, match="unknown device"):
        train(lstm(), Echo(), TrainConfig(steps=1, device="tpu-ish", progress=False))


def test_progress_bar_runs(capsys):
    train(lstm(), Echo(), TrainConfig(steps=3, progress=True))
    assert "3/3" in capsys.readouterr().err


# -- the real architectures and tasks -------------------------------------------------------------

def test_small_ntm_on_copy_learns_and_checkpoints(tmp_path):
    task = make_task("copy", bits=4, min_length=1, max_length=3)
    torch.manual_seed(0)
    model = build_model("ntm", dict(input_size=5, output_size=4, controller_size=16, memory_slots=8, memory_width=6))
    r = train(model, task, TrainConfig(steps=30, lr=1e-2, batch_size=8, eval_every=15, curriculum=True,
                                       checkpoint_every=15, out_dir=tmp_path, progress=False))
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    ckpt = load_checkpoint(r.final_checkpoint)
    batch = task.sample(4, seed=123)
    model.eval()
    with torch.no_grad():
        assert torch.equal(ckpt.model(batch.inputs), model(batch.inputs))
    assert ckpt.meta.task == task.spec() and ckpt.meta.arch == "ntm"


# -- the command line -----------------------------------------------------------------------------

def test_cli_trains_and_writes_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--arch", "lstm", "--task", "copy", "--task-param", "bits=3",
               "--task-param", "max_length=3", "--model-param", "hidden_size=8", "--steps", "4",
               "--batch-size", "4", "--checkpoint-every", "2", "--out", str(out), "--no-progress",
               "--eval-size", "4"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "final.safetensors", "history.json", "step-000002.safetensors", "step-000004.safetensors"]
    assert str(out) in printed and "wrong_bits=" in printed
    ckpt = load_checkpoint(out / "final.safetensors")
    assert ckpt.meta.config == {"input_size": 4, "output_size": 3, "hidden_size": 8, "num_layers": 1}
    assert ckpt.meta.task == {"name": "copy", "params": {"bits": 3, "min_length": 1, "max_length": 3}}
    assert ckpt.meta.extra["train"]["eval_params"] == {"min_length": 3}  # scored on the longest


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "transformer9"], "unknown architecture 'transformer9'"),
        (["--task", "sorting"], "unknown task 'sorting'"),
        (["--task-param", "lenght=3"], "task 'copy' has no parameter 'lenght'"),
        (["--task-param", "max_length"], "expected KEY=VALUE"),
        (["--model-param", "hidden=3", "--arch", "lstm"], "arch 'lstm' has no parameter 'hidden'"),
        (["--model-param", "hidden_size=big", "--arch", "lstm"], "expected an integer"),
        (["--model-param", "input_size=3", "--arch", "lstm"], "input_size comes from the task"),
        (["--task-param", "min_length=5", "--task-param", "max_length=2"], "must be at least"),
        (["--arch", "lstm", "--task", "mqar", "--curriculum"], "has no parameter 'max_length'"),
    ],
)
def test_cli_user_mistakes(tmp_path, capsys, args, message):
    rc = main(["train", "--steps", "1", "--out", str(tmp_path / "x"), "--no-progress", *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_unavailable(tmp_path, capsys):
    rc = main(["train", "--steps", "1", "--device", "cuda", "--out", str(tmp_path / "x")])
    assert rc == 2 and "CUDA is not available" in capsys.readouterr().err
