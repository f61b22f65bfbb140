"""Ablations: replace sites (zero, mean, resample) and measure the task metric."""
from __future__ import annotations

from pydantic import ConfigDict, Field

from mnemoscope.analysis.ablation import AblationSpec, Mode, run_ablations

from ..errors import Invalid
from ..request_base import JobRequest, StrictRequest
from ..settings import Settings
from .base import JobKind, JobLoad, check_elements, site_names, site_specs


class AblationSpecIn(StrictRequest):
    sites: list[str] = Field(min_length=1, max_length=64, description='site names or globs ("memory.*")')
    mode: Mode = Field(
        "zero", description="zero: 0; mean: the batch mean at that step; resample: another input's value")
    steps: list[int] | None = Field(None, max_length=4096, description="timesteps to ablate (default all)")
    elements: dict[str, list[int]] | None = Field(
        None, max_length=8, description='elements per axis, e.g. {"slot": [3, 4]} or {"head": [0]} (default all)')
    label: str | None = Field(None, max_length=200, description="a name for this ablation in the results")


class AblationsRequest(JobRequest):
    samples: int = Field(32, ge=1, le=512)
    specs: list[AblationSpecIn] | None = Field(None, max_length=256,
                                                description="default: each recorded site on its own, zeroed")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"samples": 16, "seed": 0, "specs": [{"sites": ["memory.read"], "mode": "resample"},
                                              {"sites": ["memory.read"], "mode": "zero", "steps": [5, 6]}]},
    ]})


def normalize(record: dict, body: AblationsRequest, settings: Settings) -> dict:
    specs = site_specs(record)
    if body.specs is None:
        # every site on its own, zeroed (the output itself excepted: zeroing it says nothing)
        chosen = [{"sites": [n], "mode": "zero", "steps": None, "elements": None, "label": None}
                  for n, s in specs.items() if not s.on_request and s.kind != "output"]
    else:
        chosen = [_normalize_spec(specs, spec) for spec in body.specs]
    if not chosen:
        raise Invalid("nothing to ablate: this model declares no sites besides its output")
    return {"samples": body.samples, "specs": chosen}


def _normalize_spec(specs: dict, spec: AblationSpecIn) -> dict:
    sites = site_names(specs, spec.sites)
    elements = {k: sorted(set(v)) for k, v in sorted(spec.elements.items())} if spec.elements else None
    if elements:
        check_elements(specs, sites, elements)
    return {
        "sites": sites,
        "mode": spec.mode,
        "steps": sorted(set(spec.steps)) if spec.steps is not None else None,
        "elements": elements,
        "label": spec.label,
    }


def run(model, task, request: dict, progress):
    batch = task.sample(request["samples"], request["seed"])
    specs = [AblationSpec(**spec) for spec in request["specs"]]
    return run_ablations(model, task, batch, specs, seed=request["seed"], progress=progress)


def cost(record: dict, request: dict, steps: int) -> JobLoad:
    """One clean pass (recording what mean and resample ablations replace), then one pass
    per spec (batched into chunks by the engine, the same rows in all)."""
    recorded = sorted({n for spec in request["specs"] if spec["mode"] != "zero" for n in spec["sites"]})
    return JobLoad(rows=request["samples"], passes=1 + len(request["specs"]), sites=tuple(recorded),
                   lower=("samples", "specs"))


ABLATIONS = JobKind(
    name="ablations",
    summary="Start an ablation job",
    description="Replace sites (zero, mean, ...) and measure the task metric.",
    request_model=AblationsRequest,
    normalize=normalize,
    run=run,
    cost=cost,
)
