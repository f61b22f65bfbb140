"""The job kinds, one module each, and their table `KINDS` (name -> `JobKind`).

Adding a kind is adding a module here and one entry below: its route, request schema,
GET /api/kinds entry, `kind` filter value and worker dispatch follow from the table.
"""
from __future__ import annotations

from typing import Literal

from .ablations import ABLATIONS
from .base import JobKind
from .gradients import GRADIENTS
from .patching import PATCHING
from .report import REPORT

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (ABLATIONS, PATCHING, GRADIENTS, REPORT)}


def names_type(kinds: dict[str, JobKind]):
    """`Literal[<each kind's name>]`, for fields and query parameters that name a kind."""
    return Literal[tuple(kinds)]  # type: ignore[valid-type]


__all__ = ["KINDS", "JobKind", "names_type", "ABLATIONS", "PATCHING", "GRADIENTS", "REPORT"]
