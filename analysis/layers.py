"""The per-layer view of a layered model: which sites are one layer's paths into the residual stream.

A model whose sites are named per layer (`layers.{i}.<kind>.out`, as models/hf.py and
models/sequence.py declare them) exposes each layer's mixer (a memory layer: role "memory"; an
attention or convolution layer: role "bypass") as one site. Removing that one site removes one
layer's contribution; the reliance analysis measures each layer's necessity that way, and the
ablation choices "layer i", "all memory layers", "all attention layers" expand to these sites.
MLPs and experts (role "series") read the residual stream after the mixers and are not a path of
their own, so they are not listed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..models.sites import SiteModel
from .sites import specs

LAYER_SITE = re.compile(r"^layers\.(\d+)\.(.+)$")
LAYER_ROLES = ("memory", "bypass")  # the two paths of the reliance design


@dataclass(frozen=True)
class LayerPart:
    layer: int
    kind: str  # what the layer part is: ssm, linear_attention, recurrent, attention, conv, memory, ...
    site: str
    role: str  # memory | bypass

    def to_dict(self) -> dict:
        return {"layer": self.layer, "kind": self.kind, "site": self.site, "role": self.role}


def layer_kind(site: str) -> str:
    """`layers.3.ssm.out` -> "ssm": the name between the layer index and a trailing `.out`."""
    match = LAYER_SITE.match(site)
    rest = match.group(2) if match else site
    return rest.removesuffix(".out")


def layer_parts(model: SiteModel) -> list[LayerPart]:
    """Each layer's memory and bypass sites, in layer order; empty for a model without per-layer sites."""
    parts = []
    for name, spec in specs(model).items():
        match = LAYER_SITE.match(name)
        if match and spec.role in LAYER_ROLES:
            parts.append(LayerPart(int(match.group(1)), layer_kind(name), name, spec.role))
    return sorted(parts, key=lambda p: (p.layer, p.site))
