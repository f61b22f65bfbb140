"""What every request body shares: unknown fields refused, a task choice, a seed.

Its own module so that the job kinds (`server/kinds/`) and the other request bodies
(`server/schemas.py`) build on the same parts without importing each other.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


def seed_field():
    return Field(0, ge=0, le=2**31 - 1, description="seeds the task sample; same seed, same data")


class TaskChoice(StrictRequest):
    name: str | None = Field(None, max_length=64, description="task name; default: the checkpoint's own task")
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the task's parameters")


class JobRequest(StrictRequest):
    """The fields every job kind's request has; a kind's request model extends it."""

    task: TaskChoice | None = Field(None, description="default: the checkpoint's task")
    seed: int = seed_field()
