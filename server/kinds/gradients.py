"""Gradient flow: how much gradient reaches the memory path versus the bypass."""
from __future__ import annotations

from pydantic import ConfigDict, Field

from mnemoscope.analysis.gradients import gradient_flow

from ..request_base import JobRequest
from ..settings import Settings
from .base import JobKind, JobLoad, recorded_sites


class GradientsRequest(JobRequest):
    samples: int = Field(16, ge=1, le=512)

    model_config = ConfigDict(json_schema_extra={"examples": [{"samples": 16, "seed": 0}]})


def normalize(record: dict, body: GradientsRequest, settings: Settings) -> dict:
    return {"samples": body.samples}


def run(model, task, request: dict, progress):
    batch = task.sample(request["samples"], request["seed"])
    return gradient_flow(model, task, batch, progress=progress)


def cost(record: dict, request: dict, steps: int) -> JobLoad:
    """A forward pass keeping every site in the autograd graph, and its backward pass."""
    return JobLoad(rows=request["samples"], passes=3, sites=tuple(recorded_sites(record)), lower=("samples",))


GRADIENTS = JobKind(
    name="gradients",
    summary="Start a gradient-flow job",
    description="How much gradient reaches the memory path versus the bypass.",
    request_model=GradientsRequest,
    normalize=normalize,
    run=run,
    cost=cost,
)
