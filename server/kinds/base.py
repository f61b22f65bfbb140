"""What a job kind is (`JobKind`), and the helpers kinds share to normalise a request.

A kind declares everything about itself in one place; the routes, the OpenAPI schema,
GET /api/kinds, the job filter and the worker's dispatch are derived from the table of
kinds (`mnemoscope.server.kinds.KINDS`). The callables are module-level functions: the
table travels to the spawned worker processes, which import them by reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mnemoscope.analysis.sites import element_mask
from mnemoscope.models.sites import SiteSpec, resolve_sites

from ..errors import Invalid
from ..request_base import JobRequest
from ..settings import Settings

Progress = Callable[..., None]


def no_summary(result: dict) -> dict:
    """The default `summarize`: nothing beyond the result itself is recorded."""
    return {}


@dataclass(frozen=True)
class JobLoad:
    """What one job runs, in the budget's terms (an estimate, not a promise).

    rows: sequences in one forward batch (samples, pairs).
    passes: forward passes over those rows, a backward pass counting as two.
    sites: sites whose values are recorded for all rows and steps at once.
    lower: the request fields that make the job cheaper, named in a refusal.
    """

    rows: int
    passes: float
    sites: tuple[str, ...] = ()
    lower: tuple[str, ...] = ()


def default_cost(record: dict, request: dict, steps: int) -> JobLoad:
    """A kind that declares no cost: one pass over its `samples` (or one) sequences,
    every always-recorded site kept."""
    samples = request.get("samples", 1)
    rows = samples if isinstance(samples, int) and not isinstance(samples, bool) else 1
    return JobLoad(rows=max(1, rows), passes=1, sites=tuple(recorded_sites(record)),
                   lower=("samples",) if "samples" in request else ())


def recorded_sites(record: dict, *kinds: str) -> list[str]:
    """The checkpoint's always-recorded sites (of these kinds, when given)."""
    return [s["name"] for s in record["sites"] if not s["on_request"] and (not kinds or s["kind"] in kinds)]


@dataclass(frozen=True)
class JobKind:
    """One kind of job, declared once.

    name: the route's last part (POST /api/checkpoints/{checkpoint_id}/{name}) and the job's `kind`.
    summary: one line, the route's summary and its entry in GET /api/kinds.
    description: the route's description in the OpenAPI document.
    request_model: the request body, with its limits; extends `JobRequest` (task, seed).
    normalize(record, body, settings) -> the kind's own request fields, defaults filled in,
        sites resolved to names; raises `Invalid` (422) for what cannot be done. The fields
        every job has (task, seed) are normalised by the job service.
    run(model, task, request, progress) -> the result (in a worker process).
    summarize(result) -> a small dict for `on_done` (computed in the worker, or from a reused result).
    on_done(store, job, summary): in the server when a job of this kind is done (also when
        its result is reused), e.g. the report's verdict badge on the checkpoint.
    cost(record, request, steps) -> JobLoad: what the normalised request makes the worker
        run on sequences of `steps` timesteps; the budget (server/budget.py) turns it into
        work and memory and refuses what is over the server's limits before queueing.
    """

    name: str
    summary: str
    description: str
    request_model: type[JobRequest]
    normalize: Callable[[dict, Any, Settings], dict]
    run: Callable[[Any, Any, dict, Progress], Any]
    summarize: Callable[[dict], dict] = no_summary
    on_done: Callable[[Any, dict, dict], None] | None = None
    cost: Callable[[dict, dict, int], "JobLoad"] = default_cost


def site_specs(record: dict) -> dict[str, SiteSpec]:
    """The checkpoint's sites, as stored in its record."""
    return {s["name"]: SiteSpec(**{**s, "shape": tuple(s["shape"]), "axes": tuple(s["axes"])}) for s in record["sites"]}


def site_names(specs: dict[str, SiteSpec], patterns: list[str]) -> list[str]:
    """Names and globs to sorted site names; unknown ones are a 422 listing the sites."""
    try:
        return sorted(resolve_sites(specs, patterns))
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def check_elements(specs: dict[str, SiteSpec], sites: list[str], elements: dict[str, list[int]]) -> None:
    """Each site can have these elements chosen (the engine's own check, as a 422)."""
    for name in sites:
        try:
            element_mask(specs[name], elements)
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
