"""A bandit curriculum: Exp3.S picks the task difficulty that maximises learning progress
(Graves, Bellemare, Menick, Munos & Kavukcuoglu 2017, "Automated Curriculum Learning for
Neural Networks", ICML), instead of a fixed schedule.

The arms are difficulty buckets, values of one task parameter: copy-like tasks `max_length`
(min_length .. the task's max_length), MQAR `num_pairs` (1 .. the task's num_pairs). Every
training step:

    pi(i) = (1 - epsilon) exp(w_i) / sum_j exp(w_j) + epsilon / N      the policy
    k ~ pi                                                             this step's bucket
    train one step on a batch x of bucket k
    nu = L(x; theta_before) - L(x; theta_after)                        learning progress:
                                                                       the paper's prediction gain
    r = rescale(nu) in [-1, 1]                                         by the 20th/80th
                                                                       percentiles of recent nu
    r^_i = (r [i = k] + beta) / pi(i)                                  importance-weighted reward
    w_i <- log[(1 - alpha) exp(w_i + eta r^_i)
               + alpha / (N - 1) sum_{j != i} exp(w_j + eta r^_j)]     Exp3.S: the "S" share of
                                                                       weight keeps every arm alive

Rescaling (the paper's section on reward scaling): with q_lo, q_hi the 20th and 80th
percentiles of the recent unscaled rewards (this one included), r = -1 below q_lo, +1 above
q_hi, linear in between. The paper keeps a reservoir sample of the whole history; a window of
the last `reward_window` rewards is used here, which follows the loss scale as training moves
on and needs no random numbers.

`TrainConfig(curriculum="bandit")` (or a `BanditCurriculum(...)`) runs it inside `train()`;
each history entry then carries the bucket chosen at every step since the previous entry
(`curriculum_steps`) and the policy at that moment (`curriculum_probs`).
"""
from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

# the task parameters a bandit may vary, in the order they are looked for
BANDIT_PARAMS = ("max_length", "num_pairs", "max_items", "max_repeats")


class Exp3S:
    """Exp3.S over `arms` arms with log-weights `w` (Auer et al. 2002, in Graves et al. 2017's form).
    `draw()` samples an arm from `probabilities()`; `update(arm, reward)` takes a reward in [-1, 1]."""

    def __init__(self, arms: int, *, eta: float, epsilon: float, alpha: float, beta: float = 0.0, seed: int = 0):
        if arms < 2:
            raise ValueError(f"Exp3.S needs at least 2 arms, got {arms}")
        if not 0.0 <= epsilon <= 1.0 or not 0.0 <= alpha <= 1.0 or eta <= 0:
            raise ValueError(f"Exp3.S: need eta > 0 and epsilon, alpha in [0, 1]; got eta={eta}, "
                             f"epsilon={epsilon}, alpha={alpha}")
        self.arms, self.eta, self.epsilon, self.alpha, self.beta = arms, eta, epsilon, alpha, beta
        self.log_weights = [0.0] * arms
        self.rng = random.Random(seed)

    def probabilities(self) -> list[float]:
        top = max(self.log_weights)
        e = [math.exp(w - top) for w in self.log_weights]
        total = sum(e)
        return [(1 - self.epsilon) * x / total + self.epsilon / self.arms for x in e]

    def draw(self) -> int:
        u, acc = self.rng.random(), 0.0
        pi = self.probabilities()
        for arm, p in enumerate(pi):
            acc += p
            if u < acc:
                return arm
        return self.arms - 1  # u within rounding of 1

    def update(self, arm: int, reward: float) -> None:
        pi = self.probabilities()
        v = [w + self.eta * ((reward if i == arm else 0.0) + self.beta) / pi[i] for i, w in enumerate(self.log_weights)]
        top = max(v)
        e = [math.exp(x - top) for x in v]
        total, share = sum(e), self.alpha / (self.arms - 1)
        w = [top + math.log((1 - self.alpha) * x + share * (total - x)) for x in e]
        # the policy depends on differences of log-weights only: keeping the largest at 0 keeps them bounded
        self.log_weights = [x - max(w) for x in w]


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


class RewardScaler:
    """Unscaled rewards -> [-1, 1] by the `low`/`high` quantiles of the last `window` rewards."""

    def __init__(self, window: int = 1000, low: float = 0.2, high: float = 0.8):
        self.history: deque[float] = deque(maxlen=window)
        self.low, self.high = low, high

    def __call__(self, raw: float) -> float:
        self.history.append(raw)
        q_lo, q_hi = quantile(self.history, self.low), quantile(self.history, self.high)
        if raw < q_lo:
            return -1.0
        if raw > q_hi:
            return 1.0
        if q_hi == q_lo:
            return 0.0  # no spread yet (the first reward, or all alike): no information
        return 2.0 * (raw - q_lo) / (q_hi - q_lo) - 1.0


@dataclass
class BanditCurriculum:
    """Exp3.S over difficulty buckets (see the module doc).

    param: the task parameter (default: the first of BANDIT_PARAMS the task has); values: the
    buckets (default: its paired minimum, e.g. min_length, or 1, up to the task's value);
    eta, epsilon, beta: Exp3.S's step size, uniform-exploration share and reward bias; alpha:
    the share of weight passed to the other arms each step (default 1 / steps, Exp3.S's choice
    for a horizon of `steps`); seed: the arm draws' seed (default the training seed).
    `eta` is large next to the paper's because these runs are thousands of steps, not millions.
    """

    param: str | None = None
    values: tuple[int, ...] | None = None
    eta: float = 0.01
    epsilon: float = 0.05
    alpha: float | None = None
    beta: float = 0.0
    reward_window: int = 1000
    seed: int | None = None

    def resolve(self, params: Any) -> tuple[str, list[int]]:
        """(the parameter, the bucket values) for a task's params; a clear error when it has none."""
        names = [f.name for f in dataclasses.fields(params)]
        param = self.param or next((p for p in BANDIT_PARAMS if p in names), None)
        if param is None or param not in names:
            raise ValueError(f"bandit curriculum: the task has no parameter {self.param or list(BANDIT_PARAMS)}; "
                             f"it has {names} (choose one with --curriculum-param)")
        if self.values is not None:
            values = [int(v) for v in self.values]
        else:
            low = getattr(params, "min_" + param[4:]) if param.startswith("max_") and "min_" + param[4:] in names else 1
            values = list(range(int(low), int(getattr(params, param)) + 1))
        if len(values) < 2:
            raise ValueError(f"bandit curriculum: {param} offers the buckets {values}; a bandit needs at least two")
        return param, values

    def start(self, params: Any, steps: int, seed: int) -> "BanditSchedule":
        param, values = self.resolve(params)
        alpha = self.alpha if self.alpha is not None else 1.0 / max(1, steps)
        bandit = Exp3S(len(values), eta=self.eta, epsilon=self.epsilon, alpha=alpha, beta=self.beta,
                       seed=seed if self.seed is None else self.seed)
        return BanditSchedule(param, values, bandit, RewardScaler(self.reward_window))


class BanditSchedule:
    """One training run's bandit: `overrides(step)` draws the step's bucket (once per step),
    `feedback(progress)` rewards it with the step's learning progress."""

    def __init__(self, param: str, values: list[int], bandit: Exp3S, scaler: RewardScaler):
        self.param, self.values, self.bandit, self.scaler = param, values, bandit, scaler
        self._step: int | None = None
        self._arm = 0

    def overrides(self, step: int) -> dict:
        if step != self._step:
            self._step, self._arm = step, self.bandit.draw()
        return {self.param: self.values[self._arm]}

    def feedback(self, progress: float) -> None:
        self.bandit.update(self._arm, self.scaler(progress))

    def probabilities(self) -> dict[int, float]:
        return dict(zip(self.values, self.bandit.probabilities()))


__all__ = ["Exp3S", "RewardScaler", "BanditCurriculum", "BanditSchedule", "quantile", "BANDIT_PARAMS"]
