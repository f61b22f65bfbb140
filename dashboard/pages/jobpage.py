"""The job page shared by Ablate, Patch, Gradients and Compare.

Each of those pages is a row (or two) of controls ending in a Run button, one or more
jobs started on Run and polled while they run (progress bar, error box), and the
finished results drawn. A page describes itself with a `JobPage`: its form, how the form
becomes job requests (`submit`), and how results become its outputs (`render`); this
module builds the layout around it and registers its callbacks.

Polling asks once per tick for the whole batch (GET /api/jobs filtered to the batch's
checkpoint or kind), not once per job; results are fetched once, when every job is done.
A tick is asked for only after the previous answer has arrived (assets/mnemoscope.js
`nextPoll` sets the `poll` store a moment later), never by a free-running timer: Dash drops the answer of a callback that a
newer call of it overtakes, so with a timer a poll slower than the interval (ten results
to fetch on a busy server) was always overtaken and the page never heard the jobs end.

A URL with `run=1` (written once a result is shown) runs the form again on load, so a
shared link shows the result, not just the form (the server answers from its stored
results). Callback bodies are plain functions of a client and the inputs (`run_step`,
`boot_step`), so tests call them with a fake client.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from .. import probes
from ..api import FINISHED, ApiClient, ApiError
from ..components import card_grid, empty_figure, error_box, export_buttons, graph_card, progress_view
from .common import NumberField, checkpoint_dropdown, field, page_boot, site_options, sites_of_kind, split_list

POLL_MS = 400

# {key: (checkpoint_id, kind, body)}: the jobs one run starts, keyed as the results come back
Requests = Mapping[str, tuple[str, str, dict]]
SAMPLES_AND_SEED = {"samples": "sequences", "seed": "seed"}  # the number fields most pages have


class FigureCard(NamedTuple):
    """A result figure: a card with its title, download name and note."""
    title: str
    filename: str
    note: str
    half: bool = False  # side by side with the next half-width card
    hidden: bool = False  # until the page shows it


@dataclass(frozen=True)
class JobPage:
    """What differs between the job pages; component ids are `f"{name}-{part}"`, and the
    page module's `layout` and `register` are this page's."""

    name: str  # "ablate": the URL path and the id prefix
    kind: str  # the job kind whose request limits bound the number fields
    submit: Callable[..., tuple[Requests, Any]]  # (page, kinds, checkpoint(s), *form values) -> (requests, memo); ValueError names the field
    render: Callable[[ApiClient, Mapping[str, Any], Any], dict]  # (api, {key: result}, memo) -> {output key: value}
    # the results, below the controls: panels ({key: CSS class}, filled with children),
    # then figures; `render` fills both by key (component id `f"{name}-{key}"`)
    panels: Mapping[str, str | None]
    figures: Mapping[str, FigureCard]
    more_outputs: tuple[tuple[str, str, str], ...] = ()  # (output key, component id, property) besides those
    # form controls that are request fields of `kind` (same name), bounded by the server's
    # limits: {field: what messages call it}; the label is that, capitalised
    numbers: Mapping[str, str] = dataclass_field(default_factory=lambda: dict(SAMPLES_AND_SEED))
    floors: Mapping[str, int] = dataclass_field(default_factory=dict)  # the page's own minimum, where stricter
    controls: Callable[[Mapping[str, str]], list] | None = None  # (URL params) -> controls before the numbers
    form: tuple[str, ...] = ()  # ids of those controls, in the order `submit` takes them (the numbers follow)
    sites_default: tuple[str, ...] | None = None  # with a `sites` control: the site kinds chosen by default
    run_label: str = "Run"
    multi: bool = False  # several checkpoints at once
    checkpoint_hint: str = "choose a checkpoint"  # the picker's placeholder
    no_checkpoint: str = "choose a checkpoint first"  # the message when Run is pressed without one
    probes: bool = False  # a task chooser: the checkpoint's own task or an uploaded prompt-pair probe

    def id(self, part: str) -> str:
        return f"{self.name}-{part}"

    def number(self, key: str) -> NumberField:
        return NumberField(self.id(key), self.kind, key, self.numbers[key], floor=self.floors.get(key))

    @property
    def number_fields(self) -> list[NumberField]:
        return [self.number(key) for key in self.numbers]

    @property
    def outputs(self) -> list[tuple[str, str, str]]:
        """(output key, component id, property) of everything `render` fills."""
        return [*[(k, self.id(k), "children") for k in self.panels], *[(k, self.id(k), "figure") for k in self.figures],
                *self.more_outputs]

    @property
    def running(self) -> dict:
        """What the results show while the jobs run: the previous result goes."""
        return {**{k: None for k in self.panels}, **{k: empty_figure("running...") for k in self.figures}}

    @property
    def failed(self) -> dict:
        """What the results show when a job failed: no result, and why is above."""
        return {**{k: None for k in self.panels},
                **{k: empty_figure("no result: the job failed (the reason is above)") for k in self.figures}}

    def results(self) -> list:
        """The panels, then the figure cards (half-width ones in pairs)."""
        out = [html.Div(id=self.id(key), className=css) for key, css in self.panels.items()]
        halves: list = []
        for key, card in self.figures.items():
            made = graph_card(self.id(key), card.title, filename=card.filename, note=card.note, hidden=card.hidden)
            if not card.half:
                out.append(made)
                continue
            halves.append(made)
            if len(halves) == 2:
                out.append(card_grid(*halves))
                halves = []
        return out + ([card_grid(*halves)] if halves else [])

    @property
    def form_keys(self) -> list[str]:
        """What `submit` takes after the checkpoint(s), and what the URL carries after it."""
        return [*self.form, *self.numbers]

    def layout(self, params: Mapping[str, str], context=None) -> html.Div:
        return page_layout(self, params)

    def register(self, app, context) -> None:
        register(app, context, self)
        if self.probes:
            probes.register(app, context, self.name, self.id("boot"))
        if self.sites_default is not None:
            register_site_picker(app, context, self, self.sites_default)


# -- layout --------------------------------------------------------------------------------------

def page_layout(page: JobPage, params: Mapping[str, str]) -> html.Div:
    """The page: its control rows (the checkpoint picker leads the first; the number
    fields, Run and the export buttons end the last), the job's progress and errors,
    then its results."""
    picked = split_list(params.get("checkpoint")) if page.multi else params.get("checkpoint")
    picker = field("Checkpoints" if page.multi else "Checkpoint",
                   checkpoint_dropdown(page.id("checkpoint"), picked, multi=page.multi,
                                       placeholder=page.checkpoint_hint), grow=True)
    rows = page.controls(params) if page.controls else [[]]
    rows[0].insert(0, picker)
    if page.probes:
        rows[-1].append(probes.probe_field(page.name))
    rows[-1] += [*[field(n.name.capitalize(), n.control(params.get(n.field))) for n in page.number_fields],
                 html.Button(page.run_label, id=page.id("run"), className="ms-btn ms-btn-primary"),
                 export_buttons(page.name)]
    return html.Div(
        [
            dcc.Store(id=page.id("boot"), data=dict(params)),
            dcc.Store(id=page.id("url-keys"), data=["checkpoint", *page.form_keys, "run"]),
            html.Span(id=page.id("url-sink"), hidden=True),
            *[html.Div(row, className="ms-controls") for row in rows],
            dcc.Store(id=page.id("jobs")),
            dcc.Store(id=page.id("poll")),  # the tick: a new value asks for the next poll
            dcc.Store(id=page.id("wait")),  # {"key", "ms", "target"} while jobs run: ask for the next tick
            html.Span(id=page.id("wait-sink"), hidden=True),
            dcc.Store(id=page.id("autorun")),  # set on load when the URL says run=1
            dcc.Store(id=page.id("ran")),  # "1" once a result is shown: the URL's run=1
            html.Div(progress_view(None), id=page.id("progress"), className="ms-progress-wrap"),
            html.Div(id=page.id("boot-error")),
            html.Div(id=page.id("error")),
            *page.results(),
        ],
        className="ms-page",
    )


def sites_field(page: JobPage, params: Mapping[str, str], placeholder: str) -> html.Label:
    """The sites dropdown; the URL's sites are options from the start (`register_site_picker`
    fills in the model's)."""
    sites = split_list(params.get("sites"))
    return field("Sites", dcc.Dropdown(id=page.id("sites"), multi=True, value=sites,
                                       options=[{"label": v, "value": v} for v in sites],
                                       placeholder=placeholder, className="ms-dropdown"), grow=True)


def one_job_per_checkpoint(most: int, hint: str, missing: str) -> dict:
    """JobPage settings of a page that runs one job of its kind on each of several chosen
    checkpoints, all with the same samples and seed (the memo: the checkpoint ids)."""
    def submit(page: JobPage, kinds: Sequence[Mapping], ids: Sequence[str], samples: Any, seed: Any):
        ids = list(ids)
        if len(ids) > most:
            raise ValueError(f"at most {most} checkpoints at once")
        body = {"samples": page.number("samples").parse(kinds, samples), "seed": page.number("seed").parse(kinds, seed)}
        return {cid: (cid, page.kind, body) for cid in ids}, ids

    return {"submit": submit, "multi": True, "checkpoint_hint": hint, "no_checkpoint": missing}


def checkpoints_in_order(api: ApiClient, ids: Sequence[str]) -> list[Mapping[str, Any]]:
    """The chosen checkpoints in training order (step, then name); their ids alone when
    the list cannot be had."""
    try:
        by_id = {c["id"]: c for c in api.checkpoints()}
    except ApiError:
        return [{"id": i, "name": i} for i in ids]
    chosen = [by_id[i] for i in ids if i in by_id]
    return sorted(chosen, key=lambda c: (c.get("step") or 0, c.get("name") or ""))


# -- jobs --------------------------------------------------------------------------------------

def slim(job: Mapping) -> dict:
    """What the page keeps of a job between polls (not its result)."""
    return {k: job.get(k) for k in ("id", "kind", "checkpoint_id", "status", "progress", "message", "error", "cached")}


def job_finished(job: Mapping | None) -> bool:
    return bool(job) and job.get("status") in FINISHED


def start_jobs(api: ApiClient, requests: Requests) -> tuple[dict, str | None]:
    """Start {key: (checkpoint_id, kind, body)}; returns ({key: job}, first error)."""
    jobs: dict[str, dict] = {}
    for key, (checkpoint_id, kind, body) in requests.items():
        try:
            jobs[key] = slim(api.start_job(checkpoint_id, kind, body))
        except ApiError as exc:
            return jobs, f"{kind} on {checkpoint_id}: {exc}"
    return jobs, None


def batch_filter(jobs: Sequence[Mapping]) -> dict:
    """The narrowest GET /api/jobs filter that lists every job of a batch: its checkpoint
    and kind where they are shared."""
    out = {}
    for key in ("checkpoint_id", "kind"):
        values = {j.get(key) for j in jobs}
        if len(values) == 1 and None not in values:
            out[key] = values.pop()
    return out


def poll_jobs(api: ApiClient, jobs: Mapping[str, Mapping] | None) -> tuple[dict, str | None]:
    """The batch's current states from one list request. A job the list leaves out (a
    busy server lists only its newest) is asked for alone."""
    jobs = dict(jobs or {})
    waiting = {key: job for key, job in jobs.items() if job.get("id") and not job_finished(job)}
    if not waiting:
        return jobs, None
    try:
        listed = {j.get("id"): j for j in api.jobs(**batch_filter(list(waiting.values())))}
    except ApiError as exc:
        return {**jobs, **{key: dict(job, status="failed", error=str(exc)) for key, job in waiting.items()}}, str(exc)
    error = None
    for key, job in waiting.items():
        try:
            jobs[key] = slim(listed.get(job["id"]) or api.job(job["id"]))
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


def run_or_poll(api: ApiClient, requests: Requests | None, jobs: Mapping[str, Mapping] | None) -> dict:
    """One step of a run: start `requests` when given, else poll `jobs`. Returns {"jobs",
    "poll_disabled", "progress", "error", "results"}, with results ({key: data}) once
    every job has finished well."""
    if requests is not None:
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


def run_step(page: JobPage, api: ApiClient, trigger: Any, checkpoint: Any, form: Sequence[Any],
             state: Mapping | None, probe: str | None = None) -> dict:
    """The run-and-poll callback's work: on Run, check the form and start the page's jobs
    (on the chosen `probe` as their task, when there is one); on a poll tick, poll them;
    once all are done, the page's outputs from `render`.
    Returns {"jobs" (the store), "poll_disabled", "progress", "error", and every output
    key (no_update where unchanged)}."""
    out: dict[str, Any] = {key: no_update for key, _, _ in page.outputs}
    out["export"] = no_update
    out["ran"] = no_update
    state = dict(state or {})
    requests = None
    if trigger in (page.id("run"), page.id("autorun")):
        try:
            if not checkpoint:
                raise ValueError(page.no_checkpoint)
            requests, memo = page.submit(page, api.kinds(), checkpoint, *form)
            requests = probes.with_probe(requests, probe)
        except (ValueError, ApiError) as exc:
            return {**out, "jobs": state or None, "poll_disabled": True, "progress": no_update, "error": str(exc)}
        state = {"memo": memo}
        out.update(page.running)  # the previous result goes while the new one runs
    step = run_or_poll(api, requests, state.get("jobs"))
    if step["results"] is not None:
        out.update(page.render(api, step["results"], state.get("memo")))
        out["ran"] = "1"
    elif step["error"]:
        out.update(page.failed)  # not "running..." for ever
    return {**out, "jobs": {"jobs": step["jobs"], "memo": state.get("memo")}, "poll_disabled": step["poll_disabled"],
            "progress": step["progress"], "error": step["error"]}


def boot_step(page: JobPage, api: ApiClient, boot: Mapping | None, values: Sequence[Any]) -> tuple:
    """On page load: the checkpoint options, the number fields' bounds and defaults, and
    whether to run at once (a shared URL with run=1 and a checkpoint)."""
    autorun = 1 if (boot or {}).get("run") == "1" and (boot or {}).get("checkpoint") else no_update
    return (*page_boot(api, boot, page.number_fields, values, multi=page.multi), autorun)


def next_wait(poll_disabled: bool, target: str, ms: int = POLL_MS) -> dict | None:
    """The `wait` store: a fresh key asks assets/mnemoscope.js for one more tick in the
    store `target`, `ms` from now."""
    return None if poll_disabled else {"key": uuid.uuid4().hex, "ms": ms, "target": target}


# -- callbacks --------------------------------------------------------------------------------

def register(app, context, page: JobPage) -> None:
    """Boot, run-and-poll, URL sync and (one checkpoint) the remembered checkpoint."""
    @app.callback(
        Output(page.id("checkpoint"), "options"),
        Output(page.id("boot-error"), "children"),
        *[Output(n.id, prop) for n in page.number_fields for prop in ("min", "max", "value")],
        Output(page.id("autorun"), "data"),
        Input(page.id("boot"), "data"),
        *[State(n.id, "value") for n in page.number_fields],
        State("token-input", "value"),
    )
    def _boot(boot, *rest):
        *values, token = rest
        with context.client(token) as api:
            return boot_step(page, api, boot, values)

    keys = [key for key, _, _ in page.outputs] + ["export", "ran"]

    @app.callback(
        Output(page.id("jobs"), "data"),
        Output(page.id("wait"), "data"),
        Output(page.id("progress"), "children"),
        Output(page.id("error"), "children"),
        *[Output(component, prop) for _, component, prop in page.outputs],
        Output({"type": "result", "name": page.name}, "data"),
        Output(page.id("ran"), "data"),
        Input(page.id("run"), "n_clicks"),
        Input(page.id("poll"), "data"),
        Input(page.id("autorun"), "data"),
        State(page.id("checkpoint"), "value"),
        *[State(page.id(part), "value") for part in page.form_keys],
        *([State(page.id("probe"), "value")] if page.probes else []),
        State(page.id("jobs"), "data"),
        State("token-input", "value"),
        prevent_initial_call=True,
    )
    def _run(_clicks, _tick, _autorun, checkpoint, *rest):
        *form, state, token = rest
        probe = form.pop() if page.probes else None
        with context.client(token) as api:
            out = run_step(page, api, ctx.triggered_id, checkpoint, form, state, probe)
        return (out["jobs"], next_wait(out["poll_disabled"], page.id("poll")), out["progress"], error_box(out["error"]),
                *[out[key] for key in keys])

    # the next poll is asked for once this answer has arrived (see the module doc)
    app.clientside_callback(
        ClientsideFunction("mnemoscope", "nextPoll"),
        Output(page.id("wait-sink"), "children"),
        Input(page.id("wait"), "data"),
        prevent_initial_call=True,
    )

    app.clientside_callback(
        ClientsideFunction("mnemoscope", "syncUrl"),
        Output(page.id("url-sink"), "children"),
        *[Input(page.id(key), "value") for key in ["checkpoint", *page.form_keys]],
        Input(page.id("ran"), "data"),
        State(page.id("url-keys"), "data"),
        prevent_initial_call=True,
    )
    if not page.multi:
        app.clientside_callback(
            ClientsideFunction("mnemoscope", "rememberCheckpoint"),
            Output("current-checkpoint", "data", allow_duplicate=True),
            Input(page.id("checkpoint"), "value"),
            prevent_initial_call="initial_duplicate",
        )


# -- a sites dropdown that follows the checkpoint --------------------------------------------

def load_sites(api: ApiClient, checkpoint_id: str | None, current: Sequence[str] | None,
               default_kinds: Sequence[str] = ()) -> tuple:
    """(site options, selection, error) for a checkpoint: the current selection where it
    still fits this model, else its sites of `default_kinds`."""
    if not checkpoint_id:
        return [], [], None
    try:
        specs = api.sites(checkpoint_id)
    except ApiError as exc:
        return [], [], error_box(str(exc))
    names = {s["name"] for s in specs}
    keep = [s for s in (current or []) if s in names]
    return site_options(specs), keep or sites_of_kind(specs, default_kinds), None


def register_site_picker(app, context, page: JobPage, default_kinds: Sequence[str]) -> None:
    """The page's `sites` dropdown is filled from its checkpoint's sites."""
    @app.callback(
        Output(page.id("sites"), "options"),
        Output(page.id("sites"), "value"),
        Output(page.id("error"), "children", allow_duplicate=True),
        Input(page.id("checkpoint"), "value"),
        State(page.id("sites"), "value"),
        State("token-input", "value"),
        prevent_initial_call="initial_duplicate",
    )
    def _sites(checkpoint_id, current, token):
        with context.client(token) as api:
            return load_sites(api, checkpoint_id, current, default_kinds)
