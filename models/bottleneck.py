"""A variational information bottleneck on the bypass (after Alemi et al. 2017, "Deep
Variational Information Bottleneck", ICLR).

The remedy: the controller's direct path into the output (NTM/DNC `controller.output`, a
sequence model's attention blocks) goes through a stochastic code z whose information about
the input is penalised, so the answer has to come through memory instead. The bypass
activation h is mapped by one linear layer to the mean mu and log standard deviation
log(sigma) of a diagonal Gaussian of h's width:

    training     z = mu + sigma * eps,  eps ~ N(0, 1)     (the reparameterisation trick)
    evaluation   z = mu                                    (deterministic: analyses repeat)

and the loss gains beta * KL(N(mu, sigma^2) || N(0, 1)), the variational upper bound on
I(Z; X) of the paper (its prior r(z) is this standard normal), with

    KL = sum over features of 0.5 * (mu^2 + sigma^2 - 1) - log(sigma)

averaged over batch and time. The module keeps the KL of the calls since the model's last
`reset()` (the architectures reset it at the start of every forward pass); the training loop
adds `bottleneck_penalty(model)` to the loss and logs the KL as `bottleneck_kl`.

A config's `bypass_bottleneck` is beta; None (old checkpoints) or 0 builds no module at all,
so those models and their state dicts are exactly what they were.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

# log(sigma) is clamped here: exp(2 * 10) is far from overflow and sigma = e^-10 is "no noise"
LOG_SIGMA_BOUND = 10.0


def gaussian_kl(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per element (not summed)."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1.0) - log_sigma


def check_beta(beta: float | None, where: str) -> None:
    """A config's `bypass_bottleneck`: None or a non-negative number."""
    if beta is not None and not float(beta) >= 0.0:
        raise ValueError(f"{where}.bypass_bottleneck must be None or >= 0 (the KL weight beta), got {beta!r}")


def wanted(beta: float | None) -> bool:
    """Does this `bypass_bottleneck` value build a bottleneck? (None and 0 do not.)"""
    return beta is not None and float(beta) > 0.0


class VariationalBottleneck(nn.Module):
    """h [..., width] -> z [..., width]; see the module doc."""

    def __init__(self, width: int, beta: float):
        super().__init__()
        self.width, self.beta = width, float(beta)
        self.encode = nn.Linear(width, 2 * width)  # -> [mu ; log sigma]
        self._kl_sum: Tensor | None = None
        self._calls = 0

    def extra_repr(self) -> str:
        return f"width={self.width}, beta={self.beta}, source='Alemi et al. 2017'"

    def reset(self) -> None:
        """Forget the KL of earlier forward passes (the model calls this as each pass begins)."""
        self._kl_sum, self._calls = None, 0

    def forward(self, h: Tensor) -> Tensor:
        mu, log_sigma = self.encode(h).chunk(2, dim=-1)
        if not self.training:
            return mu  # the code's mean: no noise and no KL at evaluation
        log_sigma = log_sigma.clamp(-LOG_SIGMA_BOUND, LOG_SIGMA_BOUND)
        kl = gaussian_kl(mu, log_sigma).sum(-1).mean()  # summed over features, averaged over the rest
        # every call (one per time step in the recurrent models) covers the same number of
        # rows, so the mean of the calls' means is the mean over batch and time
        self._kl_sum = kl if self._kl_sum is None else self._kl_sum + kl
        self._calls += 1
        return mu + torch.exp(log_sigma) * torch.randn_like(mu)

    @property
    def kl(self) -> Tensor | None:
        """The mean KL per code (batch and time averaged) since the last reset; None when the
        module has not run in training mode since."""
        return None if self._kl_sum is None else self._kl_sum / self._calls


def reset_bottlenecks(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, VariationalBottleneck):
            m.reset()


def bottleneck_penalty(model: nn.Module) -> tuple[Tensor, Tensor] | None:
    """(sum of beta * KL, sum of KL) over the model's bottlenecks after a training-mode
    forward pass, or None when it has none (or none ran)."""
    terms = [(m.beta, m.kl) for m in model.modules() if isinstance(m, VariationalBottleneck) and m.kl is not None]
    if not terms:
        return None
    penalty = sum(beta * kl for beta, kl in terms)
    kl = sum(kl for _, kl in terms)
    return penalty, kl


__all__ = ["VariationalBottleneck", "gaussian_kl", "bottleneck_penalty", "reset_bottlenecks", "check_beta", "wanted"]
