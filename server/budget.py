"""What a request will cost, estimated before anything runs, against this server's limits.

Every trace and job request is priced from its normalised form and the checkpoint's
record (no model is loaded, no sequence sampled):

    steps   the longest sequence the task's parameters can produce (T), from the task
            as a whole, not parameter by parameter: repeat_copy's length times repeats
    rows    sequences run side by side (samples, pairs)
    values  numbers recorded (jobs) or returned (a trace's tensors and sites); a site
            whose shape has a `None` axis grows with the sequence (T x T attention)
    work    rows x passes x steps x model parameters, the forward work
    bytes   a trace answer's JSON size, from its values

A request over a limit is refused with 422 and a `budget` object beside `detail`:

    {"detail": "...", "budget": {"limit": "max_steps", "value": 48622, "maximum": 2048,
                                  "lower": ["task.params"]}}

`limit` is the Settings field (`MNEMOSCOPE_<LIMIT>` raises it), `lower` the request
fields that bring the cost down. The limits each request is held to are declared once
below (`TRACE_LIMITS`, `JOB_LIMITS`); GET /api/kinds shows them from the same tables.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from mnemoscope.analysis.sites import step_size
from mnemoscope.models.tasks import Task, make_task

from .errors import OverBudget
from .kinds.base import JobKind, site_specs
from .reduction import REDUCED_AXES, bin_count
from .settings import Settings

# A value in a trace answer: a float64 written by `json.dumps` takes up to 17 significant
# digits plus sign, point, exponent and a separator; integers and booleans take less.
BYTES_PER_VALUE = 20


@dataclass(frozen=True)
class Limit:
    setting: str  # the Settings field that holds the maximum (MNEMOSCOPE_<SETTING> in the environment)
    quantity: str  # the Cost field it bounds
    words: str  # what the quantity is, for the sentence
    lower: tuple[str, ...] = ()  # request fields that lower it (a job kind adds its own)


STEPS = Limit("max_steps", "steps", "timesteps per sequence (from the task's parameters)", ("task.params",))
TRACE_BYTES = Limit("trace_max_bytes", "bytes", "bytes of JSON in the answer",
                    ("samples", "sites", "task.params", "reduce", "window"))
TRACE_LIMITS = (
    STEPS,
    TRACE_BYTES,
    Limit("trace_max_work", "work", "sequences x steps x parameters of work", ("samples", "task.params")),
)
JOB_LIMITS = (
    STEPS,
    Limit("job_max_values", "values", "site values recorded at once", ("task.params",)),
    Limit("job_max_work", "work", "sequences x passes x steps x parameters of work", ("task.params",)),
)
MEMORY = Limit("worker_memory_mb", "memory_mb", "MB of memory in one worker process", ("samples", "sites", "task.params"))
# besides the budget, what a client may want to know to stay within this server's limits
TRACE_ALSO = ("trace_timeout_s", "trace_max_samples")
JOB_ALSO = ("job_timeout_s", "max_queued_jobs")


@dataclass(frozen=True)
class Cost:
    steps: int
    rows: int
    values: int
    work: float
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- sequence length ---------------------------------------------------------------------------

# The longest sequence of each built-in task, from its layout (see models/tasks). Used only
# while a task lacks its own `max_steps()`; a task that has one is asked instead.
_LAYOUT_STEPS = {
    "copy": lambda p: 2 * p.max_length + 1,
    "repeat_copy": lambda p: p.max_length + 1 + p.max_length * p.max_repeats + 1,
    "associative_recall": lambda p: p.max_items * (p.item_length + 1) + 2 + 2 * p.item_length,
    "mqar": lambda p: p.seq_len,
}


def task_steps(task: Task) -> int:
    """The longest sequence `task` can produce with its parameters, without producing it
    (a task with no known layout is sampled once, one sequence)."""
    own = getattr(task, "max_steps", None)
    if callable(own):
        return int(own())
    layout = _LAYOUT_STEPS.get(task.name)
    if layout is not None:
        return int(layout(task.params))
    return int(task.sample(1, 0).mask.shape[1])


# -- estimates ----------------------------------------------------------------------------------

def site_values(record: dict, sites: Sequence[str], steps: int, max_points: int | None = None) -> int:
    """Values per row and timestep of these sites, `None` axes at the full sequence length
    (slot and key axes pooled to `max_points` bins where a trace is reduced)."""
    specs = site_specs(record)
    total = 0
    for name in sites:
        if name in specs:
            shape = step_size(specs[name], steps)
            axes = list(specs[name].axes)
            total += math.prod(bin_count(n, max_points) if i < len(axes) and axes[i] in REDUCED_AXES else n
                               for i, n in enumerate(shape))
    return total


def estimate_trace(record: dict, task: Task, samples: int, sites: Sequence[str],
                   window: Sequence[int] | None = None, max_points: int | None = None) -> Cost:
    """The cost of tracing `samples` sequences of `task` on the checkpoint, recording `sites`
    (resolved names). Per row and step the answer holds the inputs, targets and mask, the
    outputs and logits, loss and metric, and every recorded site; a `window` and `reduce`'s
    `max_points` shrink the steps answered (and the slot and key axes), not the forward."""
    steps = task_steps(task)
    tokens = task.vocab_size is not None
    classes = task.output_kind != "bits"
    out = int(task.output_size)
    per_step = (1 if tokens else int(task.input_size)) + (1 if classes else out) + 1 + 2 * out + 2
    answered = bin_count(max(0, min(window[1], steps) - window[0]) if window else steps, max_points)
    values = samples * answered * (per_step + site_values(record, sites, steps, max_points))
    return Cost(steps=steps, rows=samples, values=values, work=float(samples) * steps * int(record["parameters"]),
                bytes=values * BYTES_PER_VALUE)


def estimate_job(kind: JobKind, record: dict, request: dict) -> tuple[Cost, tuple[str, ...]]:
    """The cost of a normalised job request, and the request fields that lower it."""
    steps = task_steps(make_task(request["task"]))
    load = kind.cost(record, request, steps)
    cost = Cost(steps=steps, rows=load.rows, values=load.rows * steps * site_values(record, load.sites, steps),
                work=float(load.rows) * load.passes * steps * int(record["parameters"]))
    return cost, load.lower


# -- checks -------------------------------------------------------------------------------------

def check_trace(cost: Cost, settings: Settings) -> None:
    _check("trace", cost, TRACE_LIMITS, settings, ())


def check_job(kind: JobKind, record: dict, request: dict, settings: Settings) -> Cost:
    cost, lower = estimate_job(kind, record, request)
    _check(f"{kind.name} job", cost, JOB_LIMITS, settings, lower)
    return cost


def _check(what: str, cost: Cost, limits: Sequence[Limit], settings: Settings, lower: Sequence[str]) -> None:
    values = cost.as_dict()
    for limit in limits:
        value = values[limit.quantity]
        if value > getattr(settings, limit.setting):
            raise refusal(what, limit, value, settings, lower)


def refusal(what: str, limit: Limit, value: float, settings: Settings, lower: Sequence[str] = ()) -> OverBudget:
    """The 422 for `value` over `limit`: a sentence, and the `budget` object."""
    maximum = getattr(settings, limit.setting)
    fields = list(dict.fromkeys([*lower, *limit.lower]))
    message = (f"this {what} would take {_number(value)} {limit.words}, more than this server allows "
               f"({limit.setting} = {_number(maximum)}); lower {', '.join(fields)}, or raise "
               f"MNEMOSCOPE_{limit.setting.upper()} on the server")
    return OverBudget(message, {"limit": limit.setting, "value": _plain(value), "maximum": _plain(maximum),
                                "lower": fields})


def advertised(settings: Settings, limits: Sequence[Limit], also: Sequence[str]) -> dict[str, float]:
    """`{setting: value}` of the limits a request is held to, for GET /api/kinds."""
    names = [limit.setting for limit in limits] + [MEMORY.setting, *also]
    return {name: _plain(getattr(settings, name)) for name in dict.fromkeys(names)}


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _number(value: float) -> str:
    value = _plain(value)
    return f"{value:.3g}" if isinstance(value, float) or abs(value) >= 10**7 else str(value)
