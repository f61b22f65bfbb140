"""Helpers the pages share: checkpoint pickers, form parsing, job polling."""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from dash import dcc, html

from ..api import FINISHED, ApiClient, ApiError
from ..components import error_box, progress_view

POLL_MS = 400


def checkpoint_label(ckpt: Mapping[str, Any]) -> str:
    task = (ckpt.get("task") or {}).get("name") or "no task"
    step = ckpt.get("step")
    step_text = f" step {step}" if step else ""
    return f"{ckpt.get('name') or ckpt.get('id')} ({ckpt.get('arch', '?')}, {task}{step_text})"


def checkpoint_options(checkpoints: Sequence[Mapping[str, Any]]) -> list[dict]:
    return [{"label": checkpoint_label(c), "value": c["id"]} for c in checkpoints if c.get("id")]


def checkpoint_dropdown(component_id: str, value: str | list[str] | None = None, multi: bool = False,
                        placeholder: str = "choose a checkpoint") -> dcc.Dropdown:
    """The URL's checkpoint(s) are options from the start (labelled by id until the list
    arrives): the dropdown drops values that are not among its options."""
    values = value if isinstance(value, list) else [value] if value else []
    return dcc.Dropdown(id=component_id, options=[{"label": v, "value": v} for v in values],
                        value=value, multi=multi, placeholder=placeholder, clearable=multi,
                        className="ms-dropdown", optionHeight=36)


def field(label: str, control, hint: str | None = None, grow: bool = False) -> html.Label:
    return html.Label([html.Span(label, className="ms-field-label"), control,
                       html.Small(hint, className="ms-hint") if hint else None],
                      className="ms-field" + (" ms-field-grow" if grow else ""))


def to_int(value: Any, *, default: int | None = None, minimum: int | None = None,
           maximum: int | None = None, name: str = "value") -> int | None:
    """A form value as an int, or `default` when blank; ValueError names the field."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if number != int(number):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    number = int(number)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {number}")
    return number


def parse_timesteps(text: str | None) -> list[int] | None:
    """"all" or blank -> None; "3, 5-7" -> [3, 5, 6, 7]."""
    if text is None or not str(text).strip() or str(text).strip().lower() in ("all", "*"):
        return None
    steps: set[int] = set()
    for part in re.split(r"[,\s]+", str(text).strip()):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"timestep range {part!r} runs backwards")
            if hi - lo > 100_000:
                raise ValueError(f"timestep range {part!r} is too long")
            steps.update(range(lo, hi + 1))
        elif part.isdigit():
            steps.add(int(part))
        else:
            raise ValueError(f"timesteps: {part!r} is not a number or a range like 3-7 (or 'all')")
    return sorted(steps)


def length_params(task: Mapping[str, Any] | None, length: int | None) -> dict[str, int]:
    """Task parameters that fix the sequence length, for the task families we know; an
    unknown task keeps its own parameters."""
    if length is None:
        return {}
    params = (task or {}).get("params") or {}
    if "min_length" in params or "max_length" in params:
        return {"min_length": length, "max_length": length}
    if "min_items" in params or "max_items" in params:
        return {"min_items": length, "max_items": length}
    if "seq_len" in params:
        return {"seq_len": length}
    return {}


def sample_length(task: Mapping[str, Any] | None) -> int | None:
    params = (task or {}).get("params") or {}
    for key in ("max_length", "max_items", "seq_len"):
        if isinstance(params.get(key), int):
            return params[key]
    return None


# -- jobs --------------------------------------------------------------------------------
#
# A run starts one or more jobs (keyed, e.g. {"ablation": job, "report": job}); the page
# keeps their slim state in a dcc.Store, a dcc.Interval polls them while any runs, and
# once all have finished their results are fetched and drawn.

def job_controls(prefix: str) -> list:
    """The pieces of a job-driven page: job store, polling interval, progress bar."""
    return [
        dcc.Store(id=f"{prefix}-jobs"),
        dcc.Interval(id=f"{prefix}-poll", interval=POLL_MS, disabled=True),
        html.Div(progress_view(None), id=f"{prefix}-progress", className="ms-progress-wrap"),
    ]


def slim(job: Mapping) -> dict:
    """What the page keeps of a job between polls (not its result)."""
    return {k: job.get(k) for k in ("id", "kind", "checkpoint_id", "status", "progress", "message", "error", "cached")}


def job_finished(job: Mapping | None) -> bool:
    return bool(job) and job.get("status") in FINISHED


def start_jobs(api: ApiClient, requests: Mapping[str, tuple[str, str, dict]]) -> tuple[dict, str | None]:
    """Start {key: (checkpoint_id, kind, body)}; returns ({key: job}, first error)."""
    jobs: dict[str, dict] = {}
    for key, (checkpoint_id, kind, body) in requests.items():
        try:
            jobs[key] = slim(api.start_job(checkpoint_id, kind, body))
        except ApiError as exc:
            return jobs, f"{kind} on {checkpoint_id}: {exc}"
    return jobs, None


def poll_jobs(api: ApiClient, jobs: Mapping[str, Mapping] | None) -> tuple[dict, str | None]:
    jobs = dict(jobs or {})
    error = None
    for key, job in jobs.items():
        if job_finished(job) or not job.get("id"):
            continue
        try:
            jobs[key] = slim(api.job(job["id"]))
        except ApiError as exc:
            jobs[key] = dict(job, status="failed", error=str(exc))
            error = error or str(exc)
    return jobs, error


def combined(jobs: Mapping[str, Mapping] | None) -> dict | None:
    """One progress state for several jobs: the mean progress, the worst status."""
    if not jobs:
        return None
    values = list(jobs.values())
    statuses = [j.get("status") for j in values]
    for status in ("failed", "cancelled"):
        if status in statuses:
            break
    else:
        status = "done" if all(s == "done" for s in statuses) else "running" if "running" in statuses or "done" in statuses else "queued"
    progress = sum(1.0 if j.get("status") == "done" else float(j.get("progress") or 0) for j in values) / len(values)
    message = f"{statuses.count('done')} of {len(values)} jobs done" if len(values) > 1 else values[0].get("message")
    return {"status": status, "progress": progress, "message": message}


def jobs_error(jobs: Mapping[str, Mapping] | None) -> str | None:
    for key, job in (jobs or {}).items():
        if job.get("status") == "failed":
            return f"the {job.get('kind') or key} job failed: {job.get('error') or 'no reason given'}"
        if job.get("status") == "cancelled":
            return f"the {job.get('kind') or key} job was cancelled"
    return None


def fetch_results(api: ApiClient, jobs: Mapping[str, Mapping]) -> tuple[dict, str | None]:
    """{key: result data} of the finished jobs (`result.data` as the server wraps it)."""
    out: dict[str, Any] = {}
    for key, job in jobs.items():
        if job.get("status") != "done":
            continue
        try:
            full = api.job(job["id"])
        except ApiError as exc:
            return out, str(exc)
        result = full.get("result")
        out[key] = result.get("data", result) if isinstance(result, Mapping) and "data" in result else result
    return out, None


def run_or_poll(api: ApiClient, trigger: Any, run_id: str, requests: Mapping[str, tuple] | None,
                jobs: Mapping[str, Mapping] | None) -> dict:
    """One step of a run-and-poll page. `requests` is None when the form is invalid (the
    caller reports why). Returns {"jobs", "poll_disabled", "progress", "error",
    "results"} with results ({key: data}) once every job has finished well."""
    if trigger == run_id:
        if not requests:
            return {"jobs": jobs, "poll_disabled": True, "progress": progress_view(None), "error": None, "results": None}
        jobs, error = start_jobs(api, requests)
    else:
        jobs, error = poll_jobs(api, jobs)
    finished = all(job_finished(j) for j in (jobs or {}).values())
    error = error or jobs_error(jobs)
    results = None
    if jobs and finished and not error:
        results, error = fetch_results(api, jobs)
    return {"jobs": jobs, "poll_disabled": finished or bool(error), "progress": progress_view(combined(jobs)),
            "error": error, "results": results}


# -- booting a page ----------------------------------------------------------------------

def checkpoint_boot(api: ApiClient, boot: Mapping | None, multi: bool = False) -> tuple:
    """(dropdown options, error box) on page load. The URL's checkpoint(s) are already the
    dropdown's value in the layout, so the page's callbacks start at once without waiting
    for this list; an id the server does not know is reported here."""
    wanted = [w for w in str((boot or {}).get("checkpoint") or "").split(",") if w]
    if not multi:
        wanted = wanted[:1]
    try:
        ckpts = api.checkpoints()
    except ApiError as exc:
        return [], error_box(str(exc))
    ids = {c.get("id") for c in ckpts}
    missing = [w for w in wanted if w not in ids]
    error = error_box(f"no checkpoint with id {', '.join(missing)} on this server; choose one from the list") if missing else None
    return checkpoint_options(ckpts), error


def site_options(specs: Sequence[Mapping[str, Any]], skip_kinds: Sequence[str] = ("output",)) -> list[dict]:
    return [{"label": f"{s['name']} ({s.get('kind')})", "value": s["name"]}
            for s in specs if s.get("kind") not in skip_kinds]


def sites_of_kind(specs: Sequence[Mapping[str, Any]], kinds: Sequence[str]) -> list[str]:
    return [s["name"] for s in specs if s.get("kind") in kinds and not s.get("on_request")]


def split_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v)]
    return [v for v in str(value).split(",") if v]
