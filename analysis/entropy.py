"""Entropy of every weight distribution a model declares (sites with `distribution=True`:
read/write weights over slots, attention patterns, read modes, ...).

For each row of a distribution (one head at one step of one sequence):

    H = -sum_i p_i log p_i,   normalised  h = H / log(n)  in [0, 1]

with n the support size: the last axis's size, or for an axis that grows with the
sequence (attention over keys) the number of keys visible at step t: the keys with a
non-zero weight at t in any sequence or head (t + 1 under a causal mask, the window
under sliding-window attention; softmax gives every visible key some weight). Values are
renormalised first, so weightings that sum to less than one (a DNC write gated
towards zero) are judged by their shape; rows with no mass, or with a single possible
key (n = 1), have no entropy (NaN, `null` in JSON). `exp(H)` is reported too: the
effective number of slots or keys the row spreads over.

Bands (on the normalised entropy h):
  diffuse  h > 0.9   near-uniform: with 128 slots, spread over more than ~79 of them;
                     addressing that does not pick anything out.
  sharp    h < 0.1   with 128 slots, effectively fewer than ~1.6: addressing one slot.
  focused  otherwise.
A site's or head's label is the band of its mean h; the fractions of rows in each band
are reported alongside.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models.sites import SiteModel
from ..models.tasks.base import Batch, Task
from .results import Result
from .runs import Progress, forward, report
from .sites import check_compatible, distribution_sites, evaluating, specs

DIFFUSE = 0.9
SHARP = 0.1


def band(h: float) -> str:
    if h != h:  # NaN
        return "undefined"
    return "diffuse" if h > DIFFUSE else "sharp" if h < SHARP else "focused"


@dataclass
class SiteEntropy(Result):
    name: str
    kind: str
    axes: list[str]  # axes of `per_step` after time: the site's axes without the distribution axis
    support: int | None  # n, or None where it is the number of visible keys (t + 1)
    per_step: Tensor  # [T, *lead] mean normalised entropy over the batch
    mean: float  # over batch, time and lead axes
    per_lead: Tensor  # [*lead] mean over batch and time (per head)
    effective_support: float  # mean exp(H)
    fraction_diffuse: float
    fraction_sharp: float
    label: str
    lead_labels: list[str]  # band per flattened lead index (per head)
    mass: float  # mean total mass before renormalising (1 for proper distributions)
    values: Tensor = field(repr=False, default=None)  # type: ignore[assignment]  # [B, T, *lead]

    _omit = ("values",)


@dataclass
class EntropyResult(Result):
    sites: list[SiteEntropy]
    thresholds: dict[str, float]
    flags: list[str]  # human-readable lines for diffuse or sharp heads

    def site(self, name: str) -> SiteEntropy:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(f"no entropy for site {name!r}; have {[s.name for s in self.sites]}")


def normalised_entropy(values: Tensor, support: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
    """(h in [0, 1], H in nats, mass) over the last axis of `values`. `support` is n,
    or a tensor broadcastable to `values.shape[:-1]` (visible keys per step)."""
    p = values.float().clamp(min=0)
    mass = p.sum(-1)
    q = p / mass.clamp(min=1e-30).unsqueeze(-1)
    H = -(q * torch.where(q > 0, q.log(), torch.zeros_like(q))).sum(-1)
    n = torch.as_tensor(support, dtype=H.dtype)
    logn = torch.log(n.clamp(min=1))
    h = H / logn.clamp(min=1e-30)
    undefined = (mass <= 1e-12) | (n <= 1)
    nan = torch.tensor(float("nan"))
    return torch.where(undefined, nan, h.clamp(0, 1)), torch.where(mass <= 1e-12, nan, H), mass


def visible_keys(values: Tensor) -> Tensor:
    """`[T]` number of keys a step can attend to, read off the weights: the key positions
    with non-zero weight at t in any sequence or head (t + 1 under a causal mask, the
    window for sliding-window attention; masked keys get exactly zero). At least 1."""
    T = values.shape[1]
    seen = (values.detach() != 0).transpose(0, 1).reshape(T, -1, values.shape[-1]).any(1)  # [T, keys]
    return seen.sum(-1).clamp(min=1)


def site_support(spec, values: Tensor) -> Tensor | int:
    """n for each row of a distribution site's values `[B, T, *shape]`: the declared size
    of its last axis, or, where that axis grows with the sequence, the keys visible at
    each step (`[1, T, 1, ...]`, broadcastable to the rows)."""
    if spec.shape[-1] is None:
        T = values.shape[1]
        return visible_keys(values).view(1, T, *([1] * (values.dim() - 3)))
    return int(spec.shape[-1])


def per_step_entropy(spec, values: Tensor) -> Tensor:
    """`[B, T, *lead]` normalised entropy of every row (one head at one step of one
    sequence) of a distribution site's values `[B, T, *shape]`, over the support the
    row could use (`site_support`); NaN where it is undefined."""
    return normalised_entropy(values, site_support(spec, values))[0]


def site_entropy(name: str, spec, values: Tensor) -> SiteEntropy:
    """Entropy of one recorded distribution site, values `[B, T, *shape]`."""
    B, T = values.shape[:2]
    support = None if spec.shape[-1] is None else int(spec.shape[-1])
    h, H, mass = normalised_entropy(values, site_support(spec, values))  # [B, T, *lead]
    lead = tuple(h.shape[2:])
    finite = ~torch.isnan(h)
    mean = float(torch.nanmean(h)) if finite.any() else float("nan")
    per_lead = torch.nanmean(h.reshape(B * T, -1), dim=0).reshape(lead) if lead else torch.nanmean(h)
    count = finite.sum().clamp(min=1)
    frac_diffuse = float(((h > DIFFUSE) & finite).sum() / count)
    frac_sharp = float(((h < SHARP) & finite).sum() / count)
    lead_flat = per_lead.reshape(-1)
    return SiteEntropy(
        name=name,
        kind=spec.kind,
        axes=list(spec.axes[:-1]),
        support=support,
        per_step=torch.nanmean(h, dim=0),
        mean=mean,
        per_lead=per_lead,
        effective_support=float(torch.nanmean(H.exp())) if finite.any() else float("nan"),
        fraction_diffuse=frac_diffuse,
        fraction_sharp=frac_sharp,
        label=band(mean),
        lead_labels=[band(float(x)) for x in lead_flat],
        mass=float(mass.mean()),
        values=h,
    )


def weight_entropy(model: SiteModel, task: Task, batch: Batch, *, progress: Progress | None = None) -> EntropyResult:
    """Normalised entropy of every distribution site, per head per timestep."""
    check_compatible(model, task)
    names = distribution_sites(model)
    all_specs = specs(model)
    report(progress, 0.0)
    with evaluating(model):
        _, values = forward(model, batch.inputs, names)
    sites = [site_entropy(n, all_specs[n], values[n]) for n in names]
    flags = []
    for s in sites:
        lead_axis = s.axes[0] if s.axes else None
        for j, lab in enumerate(s.lead_labels):
            if lab not in ("diffuse", "sharp"):
                continue
            where = s.name if len(s.lead_labels) == 1 or lead_axis is None else f"{s.name} {lead_axis} {j}"
            h = float(s.per_lead.reshape(-1)[j])
            unit = "slots" if s.kind in ("read_weights", "write_weights") else "entries"
            n = f"{s.support} {unit}" if s.support is not None else "the visible keys"
            what = "near-uniform over" if lab == "diffuse" else "concentrated on one or two of"
            flags.append(f"{where}: {lab} (mean normalised entropy {h:.2f}, ~{s.effective_support:.1f} effective); "
                         f"{what} {n}")
    report(progress, 1.0)
    return EntropyResult(sites=sites, thresholds={"diffuse_above": DIFFUSE, "sharp_below": SHARP}, flags=flags)
