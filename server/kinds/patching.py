"""Activation patching: patch sites between clean and corrupted runs, exactly (one
batched forward row block per cell) or estimated by attribution patching (AtP*: one
source forward, one base forward with gradients, one backward), optionally with the
estimate's top cells and a sample of the rest verified exactly."""
from __future__ import annotations

from pydantic import ConfigDict, Field

from mnemoscope.analysis.attribution import Mode, attribution_patch, verify_attribution
from mnemoscope.analysis.patching import Direction, patch_sweep
from mnemoscope.analysis.runs import sub_progress

from ..errors import Invalid
from ..request_base import JobRequest
from ..settings import Settings
from .base import JobKind, JobLoad, site_names, site_specs


class PatchingRequest(JobRequest):
    pairs: int = Field(8, ge=1, le=256, description="clean/corrupted pairs")
    sites: list[str] | None = Field(None, max_length=64, description="default: every site")
    direction: Direction = "denoise"
    per_element: str | None = Field(None, max_length=32,
                                    description='an axis ("slot", "head") to patch element by element (default whole sites)')
    memory_budget_mb: int = Field(512, ge=16, le=16384)
    mode: Mode = Field("exact", description='"exact": every cell patched; "attribution": every cell estimated to '
                       'first order (AtP*); "attribution+verify": estimated, then the top cells and a random sample '
                       'checked exactly (`verify` in the result)')

    model_config = ConfigDict(json_schema_extra={"examples": [{"pairs": 8, "direction": "denoise"}]})


def normalize(record: dict, body: PatchingRequest, settings: Settings) -> dict:
    specs = site_specs(record)
    sites = site_names(specs, body.sites) if body.sites else None
    if body.per_element is not None:
        if sites is not None:
            lacking = [n for n in sites if body.per_element not in specs[n].axes]
            if lacking:
                raise Invalid(f"per_element={body.per_element!r}: sites {lacking} have no such axis")
        elif not any(body.per_element in s.axes for s in specs.values()):
            axes = sorted({a for s in specs.values() for a in s.axes})
            raise Invalid(f"per_element={body.per_element!r}: no site of this model has that axis; "
                          f"its axes are {axes}")
    normalized = {
        "pairs": body.pairs,
        "sites": sites,
        "direction": body.direction,
        "per_element": body.per_element,
        "memory_budget_mb": body.memory_budget_mb,
    }
    # an exact request normalises as it did before modes existed, so its stored results still match
    if body.mode != "exact":
        normalized["mode"] = body.mode
    return normalized


def run(model, task, request: dict, progress):
    pair = task.patch_pairs(request["pairs"], request["seed"])
    mode = request.get("mode", "exact")
    options = dict(direction=request["direction"], per_element=request["per_element"],
                   memory_budget_mb=request["memory_budget_mb"])
    if mode == "exact":
        result = patch_sweep(model, task, pair, request["sites"], progress=progress, **options)
        out = {**result.to_dict(), "label": "exact"}
    else:
        verify = mode == "attribution+verify"
        result = attribution_patch(model, task, pair, request["sites"],
                                   progress=sub_progress(progress, 0, 0.5 if verify else 1), **options)
        if verify:
            verify_attribution(model, task, pair, result, seed=request["seed"],
                               memory_budget_mb=request["memory_budget_mb"], progress=sub_progress(progress, 0.5, 1))
        out = result.to_dict()
    # how many pairs' answers differ at each timestep: the dashboard marks those columns
    return {**out, "differs_per_step": pair.differs.sum(0).tolist()}


def cost(record: dict, request: dict, steps: int) -> JobLoad:
    """The clean and corrupted runs (recording the patched sites), then one variant per
    site, step (and element with `per_element`), each a block of `pairs` rows over the
    sequence. Default sites: the engine's (the memory path and the bypass)."""
    specs = site_specs(record)
    sites = request["sites"] or [n for n, s in specs.items() if not s.on_request and (s.memory or s.kind == "bypass")]
    axis = request["per_element"]
    variants = 0
    for name in sites:
        spec = specs[name]
        elements = spec.shape[spec.axes.index(axis)] if axis in spec.axes else 1
        variants += steps * (steps if elements is None else elements)
    return JobLoad(rows=request["pairs"], passes=2 + variants, sites=tuple(sites),
                   lower=("pairs", "sites", "per_element"))


PATCHING = JobKind(
    name="patching",
    summary="Start an activation-patching job",
    description="Patch sites between clean and corrupted runs.",
    request_model=PatchingRequest,
    normalize=normalize,
    run=run,
    cost=cost,
)
