"""GET /api/kinds: what this server can run, with each request's numeric limits and the
budget it is held to (server/budget.py), so a client (the dashboard's inputs, a script)
need not copy them."""
from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from .. import budget
from ..deps import KindsDep, SettingsDep
from ..schemas import KindOut, TraceRequest
from ..settings import Settings
from . import checkpoints, jobs

router = APIRouter(prefix="/api", tags=["kinds"])


@router.get("/kinds", response_model=list[KindOut],
            summary="The job kinds (and trace) with their routes and request limits",
            description="One entry per job kind, plus `trace`. `limits` gives each numeric request field's "
                        "`minimum`, `maximum` and `default`, with this server's own limits applied where they "
                        "are tighter; `task_param_max` is the largest integer task parameter it accepts; "
                        "`budget` the server's limits on what one request may cost (settings by name).")
def list_kinds(kinds: KindsDep, settings: SettingsDep) -> list[dict]:
    job_budget = budget.advertised(settings, budget.JOB_LIMITS, budget.JOB_ALSO)
    entries = [_entry(k.name, k.summary, jobs.PREFIX + jobs.start_path(k.name), k.request_model, settings, {},
                      job_budget) for k in kinds.values()]
    trace = next(r for r in checkpoints.router.routes if r.endpoint is checkpoints.trace_checkpoint)
    entries.append(_entry(trace.path.rsplit("/", 1)[-1], trace.summary, trace.path, TraceRequest, settings,
                          {"samples": settings.trace_max_samples},
                          budget.advertised(settings, budget.TRACE_LIMITS, budget.TRACE_ALSO)))
    return entries


def _entry(name: str, summary: str | None, route: str, model: type[BaseModel], settings: Settings,
           server_maximums: dict[str, int], limits_budget: dict[str, float]) -> dict:
    return {"name": name, "summary": summary or "", "route": route, "method": "POST",
            "limits": numeric_limits(model, server_maximums), "task_param_max": settings.max_task_param,
            "budget": limits_budget}


def numeric_limits(model: type[BaseModel], server_maximums: dict[str, int]) -> dict[str, dict]:
    """`{field: {"minimum", "maximum", "default"}}` for each top-level integer or number field
    of the request model's JSON schema; a server maximum replaces a looser schema one."""
    limits = {}
    for field, schema in model.model_json_schema()["properties"].items():
        if schema.get("type") not in ("integer", "number"):
            continue
        maximum = schema.get("maximum")
        if field in server_maximums:
            maximum = server_maximums[field] if maximum is None else min(maximum, server_maximums[field])
        limits[field] = {"minimum": schema.get("minimum"), "maximum": maximum, "default": schema.get("default")}
    return limits
