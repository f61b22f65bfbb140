"""Architecture registry: name -> SiteModel subclass, and building one from a config dict.

The registry names each architecture's module and class and imports it on first use; the
architecture modules never import the registry, so nothing here is circular and importing
`mnemoscope.models` does not load every architecture.
"""
from __future__ import annotations

import dataclasses
import importlib

from .sites import SiteModel

# name -> "module:Class", the module relative to this package; the class's `arch` is the name
ARCHITECTURES: dict[str, str] = {
    "lstm": "lstm:LSTM",
    "ntm": "ntm:NTM",
    "dnc": "dnc:DNC",
    "mamba": "mamba:Mamba",
    "sequence": "sequence:SequenceModel",
    "hf": "hf:HFModel",
}


def _load(arch: str) -> type[SiteModel]:
    module_name, class_name = ARCHITECTURES[arch].split(":")
    cls = getattr(importlib.import_module(f"{__package__}.{module_name}"), class_name)
    if cls.arch != arch:  # a checkpoint stores `arch`: the name must round-trip
        raise RuntimeError(f"registry entry {arch!r} -> {ARCHITECTURES[arch]} has arch {cls.arch!r}")
    return cls


def _load_all() -> dict[str, type[SiteModel]]:
    """Every architecture class by name (imports all of them)."""
    return {name: _load(name) for name in ARCHITECTURES}


def architecture(arch: str) -> type[SiteModel]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return _load(arch)


def make_config(arch: str, config: dict, *, stored: bool = False):
    """The architecture's config dataclass from a dict; unknown keys are an error. A stored
    config (a checkpoint's) takes the Config's STORED_DEFAULTS for the fields it leaves out:
    what they meant before those fields existed."""
    cls = architecture(arch)
    if stored:
        config = {**getattr(cls.Config, "STORED_DEFAULTS", {}), **config}
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"config for {arch!r} has unknown keys {unknown}; expected some of {sorted(fields)}")
    return cls.Config(**config)


def build_model(arch: str, config: dict) -> SiteModel:
    return architecture(arch)(make_config(arch, config))
