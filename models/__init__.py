"""Architectures with named sites, tasks, safe checkpoints, importers and training."""
from .registry import ARCHITECTURES, architecture, build_model
from .sites import Intervention, SiteModel, SiteSpec, Trace, hooks, run_with_sites

__all__ = [
    "ARCHITECTURES",
    "architecture",
    "build_model",
    "Intervention",
    "SiteModel",
    "SiteSpec",
    "Trace",
    "hooks",
    "run_with_sites",
]
