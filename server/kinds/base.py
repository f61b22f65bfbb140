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
    """

    name: str
    summary: str
    description: str
    request_model: type[JobRequest]
    normalize: Callable[[dict, Any, Settings], dict]
    run: Callable[[Any, Any, dict, Progress], Any]
    summarize: Callable[[dict], dict] = no_summary
    on_done: Callable[[Any, dict, dict], None] | None = None


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
