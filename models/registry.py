"""Architecture registry: name -> SiteModel subclass, and building one from a config dict."""
from __future__ import annotations

import dataclasses

from .sites import SiteModel

ARCHITECTURES: dict[str, type[SiteModel]] = {}


def register(cls: type[SiteModel]) -> type[SiteModel]:
    """Class decorator: make an architecture loadable by name from checkpoints."""
    if not cls.arch:
        raise ValueError(f"{cls.__name__} has no `arch` name")
    ARCHITECTURES[cls.arch] = cls
    return cls


# Modules whose import registers architectures; loaded lazily so `registry` has no cycle.
ARCHITECTURE_MODULES = ("lstm", "ntm", "dnc", "mamba", "sequence", "hf")  # helpers add: "ntm", "dnc", "sequence"


def _load_all() -> None:
    import importlib

    for name in ARCHITECTURE_MODULES:
        importlib.import_module(f"{__package__}.{name}")


def architecture(arch: str) -> type[SiteModel]:
    _load_all()
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def make_config(arch: str, config: dict):
    """The architecture's config dataclass from a dict; unknown keys are an error."""
    cls = architecture(arch)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"config for {arch!r} has unknown keys {unknown}; expected some of {sorted(fields)}")
    return cls.Config(**config)


def build_model(arch: str, config: dict) -> SiteModel:
    return architecture(arch)(make_config(arch, config))
