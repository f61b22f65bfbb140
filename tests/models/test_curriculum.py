"""The bandit curriculum (models/curriculum.py): Exp3.S against a hand-computed update, the
reward rescaling, the buckets, determinism, and the training loop and CLI running it."""
import json
import math

import pytest
import torch

from mnemoscope.cli import main
from mnemoscope.models import build_model
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.curriculum import BanditCurriculum, Exp3S, RewardScaler, quantile
from mnemoscope.models.tasks import make_task
from mnemoscope.models.training import TrainConfig, train

from .test_training import Echo, EchoParams, lstm


def test_exp3s_probabilities_follow_a_hand_computed_update():
    eta, eps, alpha = 0.5, 0.1, 0.2
    b = Exp3S(3, eta=eta, epsilon=eps, alpha=alpha, beta=0.0)
    assert b.probabilities() == pytest.approx([1 / 3] * 3)  # all weights 0: uniform

    # step 1: arm 0, reward +1. pi = 1/3 each, so r^ = (3, 0, 0) and w + eta r^ = (1.5, 0, 0);
    # the S step: w_i = log[(1 - alpha) e^{v_i} + alpha/(N-1) sum_{j != i} e^{v_j}]
    #   w_0 = log(0.8 e^1.5 + 0.1 (1 + 1))      = log 3.785351 = 1.331139
    #   w_1 = w_2 = log(0.8 + 0.1 (e^1.5 + 1))  = log 1.348169 = 0.298747
    # pi = 0.9 softmax(w) + 0.1/3 = (0.558940, 0.220530, 0.220530)
    b.update(0, 1.0)
    assert b.probabilities() == pytest.approx([0.558940, 0.220530, 0.220530], abs=1e-6)

    # step 2: arm 2, reward -0.5, importance-weighted by pi_2 = 0.220530
    w = [math.log(0.8 * math.exp(1.5) + 0.2), math.log(0.8 + 0.1 * (math.exp(1.5) + 1))]
    w = [w[0], w[1], w[1]]
    pi = [0.9 * math.exp(x) / sum(map(math.exp, w)) + 0.1 / 3 for x in w]
    v = [w[0], w[1], w[2] + eta * (-0.5) / pi[2]]
    e = [math.exp(x) for x in v]
    w = [math.log((1 - alpha) * e[i] + alpha / 2 * (sum(e) - e[i])) for i in range(3)]
    by_hand = [(1 - eps) * math.exp(x) / sum(map(math.exp, w)) + eps / 3 for x in w]
    b.update(2, -0.5)
    assert b.probabilities() == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx([0.551675, 0.275889, 0.172435], abs=1e-6)


def test_exp3s_reward_bias_beta_lifts_every_arm_by_its_inverse_probability():
    b = Exp3S(2, eta=1.0, epsilon=0.0, alpha=0.0, beta=0.1)
    b.update(0, 0.0)  # no reward, only beta: r^ = (0.1/0.5, 0.1/0.5): both arms alike
    assert b.probabilities() == pytest.approx([0.5, 0.5])
    b = Exp3S(2, eta=1.0, epsilon=0.0, alpha=0.0, beta=0.0)
    b.update(1, 0.5)  # w = (0, 0.5 / 0.5 = 1): pi_1 = e / (1 + e)
    assert b.probabilities()[1] == pytest.approx(math.e / (1 + math.e))


def test_exp3s_draws_are_seeded():
    def draws(seed):
        b = Exp3S(4, eta=0.1, epsilon=0.05, alpha=0.01, seed=seed)
        out = []
        for i in range(50):
            arm = b.draw()
            out.append(arm)
            b.update(arm, 1.0 if arm == 2 else -1.0)
        return out

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
    assert set(draws(3)) <= {0, 1, 2, 3}


def test_exp3s_learns_which_arm_pays():
    b = Exp3S(4, eta=0.05, epsilon=0.05, alpha=0.001, seed=0)
    for _ in range(400):
        arm = b.draw()
        b.update(arm, 1.0 if arm == 2 else -0.5)
    pi = b.probabilities()
    assert pi.index(max(pi)) == 2 and pi[2] > 0.5
    assert min(pi) >= 0.05 / 4 - 1e-12  # epsilon keeps exploring


def test_quantile_is_linear_interpolation():
    values = [3.0, -1.0, 0.5, 2.0, 7.0]
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert quantile(values, q) == pytest.approx(torch.quantile(torch.tensor(values, dtype=torch.float64), q).item())


def test_reward_scaler_by_hand():
    s = RewardScaler(window=3)
    assert s(0.0) == 0.0  # history [0]: no spread, no information
    assert s(1.0) == 1.0  # history [0, 1]: q_lo 0.2, q_hi 0.8; 1 is above
    assert s(0.5) == pytest.approx(0.0)  # [0, 0.5, 1]: q_lo 0.2, q_hi 0.8; 2 (0.5 - 0.2) / 0.6 - 1
    assert s(-1.0) == -1.0  # window 3: [1, 0.5, -1]; below q_lo = -0.4
    assert s(0.7) == 1.0  # [0.5, -1, 0.7]: q_lo -0.4, q_hi 0.5 + 0.6 * 0.2 = 0.62
    assert s(0.0) == pytest.approx(2 * (0.0 + 0.6) / (0.42 + 0.6) - 1)  # [-1, 0.7, 0]: q_lo -0.6, q_hi 0.42


def test_buckets_per_task():
    copy = make_task("copy", bits=3, min_length=2, max_length=5)
    assert BanditCurriculum().resolve(copy.params) == ("max_length", [2, 3, 4, 5])
    mqar = make_task("mqar", vocab_size=32, seq_len=32, num_pairs=4)
    assert BanditCurriculum().resolve(mqar.params) == ("num_pairs", [1, 2, 3, 4])
    assert BanditCurriculum(values=(2, 4)).resolve(mqar.params) == ("num_pairs", [2, 4])
    with pytest.raises(ValueError, match="at least two"):
        BanditCurriculum().resolve(make_task("copy", bits=3, min_length=3, max_length=3).params)
    with pytest.raises(ValueError, match="no parameter"):
        BanditCurriculum(param="num_pairs").resolve(copy.params)


def test_schedule_draws_once_per_step_and_rewards_the_drawn_bucket():
    run = BanditCurriculum(eta=0.5, alpha=0.0).start(EchoParams(min_length=1, max_length=3), steps=10, seed=0)
    first = run.overrides(0)
    assert run.overrides(0) == first  # the first evaluation and step 1 ask for step 0: one draw
    before = run.probabilities()
    run.feedback(1.0)  # the first reward scales to 0 (no history): no change
    assert run.probabilities() == pytest.approx(before)
    run.overrides(1)
    arm_value = run.overrides(1)["max_length"]
    run.feedback(5.0)  # above every earlier progress: scaled to +1
    after = run.probabilities()
    assert after[arm_value] > before[arm_value]


def bandit_run(seed=0, steps=12):
    task = Echo(EchoParams(min_length=1, max_length=4))
    r = train(lstm(), task, TrainConfig(steps=steps, eval_every=4, seed=seed, curriculum="bandit", progress=False))
    return task, r


def test_training_logs_the_chosen_bucket_of_every_step_and_samples_it():
    task, r = bandit_run()
    chosen = [v for e in r.history for v in e["curriculum_steps"]]
    assert len(chosen) == 12 and set(chosen) <= {1, 2, 3, 4}
    # task.lengths: the eval batch first, then each step's batch, drawn from [1, chosen]
    assert all(length <= cap for length, cap in zip(task.lengths[1:], chosen))
    for e in r.history:
        assert sum(e["curriculum_probs"].values()) == pytest.approx(1.0)
    assert r.history[-1]["curriculum_probs"] != {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}  # it learned something
    assert r.config["curriculum"] == "bandit"


def test_bandit_training_is_deterministic_with_a_seed():
    _, a = bandit_run(seed=1)
    _, b = bandit_run(seed=1)
    assert [e["curriculum_steps"] for e in a.history] == [e["curriculum_steps"] for e in b.history]
    assert a.history[-1]["loss"] == b.history[-1]["loss"]


def test_unknown_curriculum_name_is_an_error():
    with pytest.raises(ValueError, match="curriculum must be one of"):
        TrainConfig(steps=1, curriculum="cosine")


def test_train_cli_bandit_curriculum(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--arch", "lstm", "--task", "copy", "--task-param", "max_length=3", "--task-param", "bits=3",
               "--model-param", "hidden_size=8", "--steps", "4", "--eval-every", "2", "--curriculum", "bandit",
               "--batch-size", "4", "--eval-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    history = json.loads((out / "history.json").read_text())
    assert sum(len(e["curriculum_steps"]) for e in history["history"]) == 4
    assert load_checkpoint(out / "final.safetensors").meta.extra["train"]["curriculum"]["type"] == "BanditCurriculum"


def test_train_cli_curriculum_forms(tmp_path, capsys):
    common = ["train", "--arch", "lstm", "--task", "copy", "--task-param", "max_length=3", "--task-param", "bits=3",
              "--model-param", "hidden_size=8", "--steps", "1", "--batch-size", "2", "--eval-size", "2", "--no-progress"]
    assert main([*common, "--curriculum", "--out", str(tmp_path / "a")]) == 0  # bare: linear
    train_cfg = load_checkpoint(tmp_path / "a" / "final.safetensors").meta.extra["train"]
    assert train_cfg["curriculum"]["type"] == "LengthCurriculum"
    assert main([*common, "--curriculum", "bandit", "--no-curriculum", "--out", str(tmp_path / "b")]) == 0
    assert load_checkpoint(tmp_path / "b" / "final.safetensors").meta.extra["train"]["curriculum"] is None
    rc = main([*common, "--curriculum", "bandit", "--task-param", "min_length=3", "--out", str(tmp_path / "c")])
    assert rc == 2 and "at least two" in capsys.readouterr().err
    rc = main(["train", "--arch", "lstm", "--task", "mqar", "--curriculum", "bandit", "--task-param", "num_pairs=2",
               "--task-param", "seq_len=16", "--task-param", "vocab_size=16", "--model-param", "hidden_size=8",
               "--steps", "2", "--batch-size", "2", "--eval-size", "2", "--out", str(tmp_path / "d"), "--no-progress"])
    assert rc == 0
    history = json.loads((tmp_path / "d" / "history.json").read_text())
    assert {v for e in history["history"] for v in e["curriculum_steps"]} <= {1, 2}


def test_help_and_the_remedies_list_name_both_options(capsys):
    from mnemoscope.models.remedies import REMEDIES

    try:
        main(["train", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "--bypass-bottleneck BETA" in out and "--curriculum [{linear,bandit}]" in out and "--no-curriculum" in out
    remedies = {r.name: r for r in REMEDIES}
    assert remedies["bypass_bottleneck"].how == "--bypass-bottleneck BETA"
    assert "bandit" in remedies["curriculum"].how and "Graves" in remedies["curriculum"].source
