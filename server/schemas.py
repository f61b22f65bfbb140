"""Request and response bodies of the REST API (they are also the OpenAPI schema)."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from .kinds import KINDS, names_type
# the job kinds' request bodies are declared with their kinds; named here as well, as the API's bodies
from .kinds.ablations import AblationSpecIn, AblationsRequest  # noqa: F401
from .kinds.gradients import GradientsRequest  # noqa: F401
from .kinds.patching import PatchingRequest  # noqa: F401
from .kinds.report import ReportRequest  # noqa: F401
from .request_base import StrictRequest, TaskChoice, seed_field

JobKindName = names_type(KINDS)
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]


# -- errors and health ------------------------------------------------------------------------

class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class BudgetOut(BaseModel):
    limit: str = Field(description="the setting that was exceeded, e.g. max_steps (MNEMOSCOPE_MAX_STEPS raises it)")
    value: int | float = Field(description="what the request would take")
    maximum: int | float = Field(description="what this server allows")
    lower: list[str] = Field(description="request fields that bring the cost down")


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, for a person")
    errors: list[FieldError] | None = Field(None, description="one entry per invalid field (422 only)")
    budget: BudgetOut | None = Field(None, description="the limit a request over this server's budget exceeds (422 only)")

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "no checkpoint with id 'abc'"}]})


class WorkersOut(BaseModel):
    size: int
    alive: int
    busy: int
    queued: int


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    uptime_s: float
    workers: WorkersOut


# -- checkpoints ----------------------------------------------------------------------------------

class TaskSpecOut(BaseModel):
    name: str
    params: dict[str, Any]


class CheckpointOut(BaseModel):
    id: str = Field(description="first 16 hex digits of the sha256 of the uploaded bytes")
    name: str
    filename: str = Field(description="the uploaded file's name, sanitised (display only)")
    file_name: str = Field(description="the same as `filename`: the upload's file name, which tells apart "
                                       "checkpoints that share a `name` (final.safetensors, step-001000.safetensors)")
    arch: str
    config: dict[str, Any]
    task: dict[str, Any] = Field(description="the task the checkpoint was trained on ({} when it records none)")
    step: int
    metrics: dict[str, Any]
    parameters: int
    sha256: str
    size_bytes: int
    format: Literal["safetensors", "torch"]
    source: str | None = Field(None, description='where an imported checkpoint came from, e.g. "pytorch-ntm"')
    created_at: str = Field(description="upload time, ISO 8601 UTC")
    verdict: str | None = Field(None, description="reliance verdict of the latest finished report job, else null")
    reliance_score: float | None = None
    report_job_id: str | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "3f2a9c0d1e4b5a67", "name": "ntm-copy", "filename": "ntm-copy.safetensors",
        "file_name": "ntm-copy.safetensors", "arch": "ntm",
        "config": {"input_size": 9, "output_size": 8, "memory_slots": 128}, "task": {"name": "copy", "params": {"bits": 8}},
        "step": 5000, "metrics": {"wrong_bits": 0.0}, "parameters": 62000,
        "sha256": "3f2a9c0d1e4b5a67" + "0" * 48, "size_bytes": 250000, "format": "safetensors", "source": None,
        "created_at": "2025-01-01T12:00:00.000Z", "verdict": None, "reliance_score": None, "report_job_id": None,
    }]})


class SiteOut(BaseModel):
    name: str
    kind: str
    shape: list[int | None] = Field(description="one timestep of one sequence; null = as long as the sequence")
    axes: list[str]
    on_request: bool = Field(description="left out of '*'; name it to record it")
    distribution: bool
    doc: str


# -- trace ------------------------------------------------------------------------------------------

class TraceReduce(StrictRequest):
    max_points: int = Field(
        ge=16, le=4096,
        description="at most this many bins on the time axis, and on a slot or key axis longer than this, each "
                    "bin keeping its largest value (weights, mask, loss), smallest (entropy), worst (metric) or "
                    "the value of largest magnitude with its sign (everything signed); the figure's width in pixels")


class TraceRequest(StrictRequest):
    task: TaskChoice | None = Field(None, description="default: the checkpoint's task with its own parameters")
    seed: int = seed_field()
    samples: int = Field(1, ge=1, le=256, description="sequences to run (the server's limit applies)")
    sites: list[str] = Field(default_factory=list, max_length=64,
                             description='sites to record: names or globs ("memory.*", "*")')
    reduce: TraceReduce | None = Field(None, description="max-pool long axes to the figure's resolution; `time` in "
                                                         "the answer gives the bins' edges in timesteps")
    window: tuple[int, int] | None = Field(
        None, description="[t0, t1]: answer only steps t0..t1-1 (0 <= t0 < t1 <= T; the model still runs the "
                          "whole prefix, its state depends on it)")

    @field_validator("window")
    @classmethod
    def _ordered(cls, window):
        if window is not None and not 0 <= window[0] < window[1]:
            raise ValueError(f"window must be [t0, t1] with 0 <= t0 < t1, not {list(window)}")
        return window

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"task": {"params": {"min_length": 5, "max_length": 5}}, "seed": 1, "samples": 2, "sites": ["*"]},
        {"task": {"params": {"seq_len": 4096}}, "sites": ["layers.0.memory.attention"],
         "reduce": {"max_points": 512}, "window": [1024, 2048]},
    ]})


class TensorOut(BaseModel):
    axes: list[str]
    shape: list[int]
    data: Any = Field(description="nested lists in `axes` order; null where a value is NaN or infinite")
    bins: dict[str, list[int]] | None = Field(
        None, description="a reduced trace: the edges of each pooled slot or key axis (bin i covers entries "
                          "edges[i]..edges[i+1]-1); the time axis's are the answer's `time.edges`")


class TraceTimeOut(BaseModel):
    length: int = Field(description="T, the whole sequence's steps")
    window: list[int] = Field(description="[t0, t1]: the steps answered")
    bin: int = Field(description="steps per time bin (1: not reduced)")
    edges: list[int] = Field(description="time bin i covers steps edges[i]..edges[i+1]-1")


class SiteTensorOut(TensorOut):
    kind: str
    distribution: bool
    entropy: TensorOut | None = Field(
        None, description="distribution sites: normalised entropy (0 sharp .. 1 uniform) of each row, axes "
                          "[batch, time, <head axes>], over the support the row could use (the slots, or the "
                          "keys visible at that step); null for other sites, and a value is null where it is undefined "
                          "(no weight at all, or a single possible key)")


class TraceSummary(BaseModel):
    loss: float | None = Field(description="task loss, mean over scored positions")
    metric: float | None = Field(description="the task's metric, mean over sequences")
    metric_per_sequence: list[float | None]
    chance: float | None


class TraceOut(BaseModel):
    checkpoint_id: str
    task: TaskSpecOut
    seed: int
    samples: int
    output_kind: Literal["bits", "classes"]
    metric_name: str
    higher_is_better: bool
    inputs: TensorOut
    targets: TensorOut
    mask: TensorOut
    outputs: TensorOut = Field(description="probabilities (sigmoid per bit or softmax over classes)")
    logits: TensorOut
    loss: TensorOut = Field(description="per-timestep loss, zero where the mask is off")
    metric: TensorOut = Field(description="per-timestep contribution to the task's metric")
    metric_scored: TensorOut | None = Field(
        None, description="each scored position's own score on the metric's scale (1/0 right for accuracy, wrong "
                          "bits for wrong bits); null where the position is not scored")
    summary: TraceSummary = Field(description="of the whole sequence, whatever the window")
    sites: dict[str, SiteTensorOut]
    time: TraceTimeOut | None = Field(None, description="the steps answered and their bins, in timesteps")


# -- jobs ------------------------------------------------------------------------------------------

class JobOut(BaseModel):
    id: str
    checkpoint_id: str
    kind: JobKindName
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    message: str | None = None
    request: dict[str, Any] = Field(description="the normalised request (task resolved, defaults filled in)")
    cached: bool = Field(description="the result was reused from an earlier identical job on the same bytes")
    error: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result: Any = Field(None, description="the result, once done (only in GET /api/jobs/{job_id})")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e", "checkpoint_id": "3f2a9c0d1e4b5a67", "kind": next(iter(KINDS)),
        "status": "running", "progress": 0.4, "message": None,
        "request": {"task": {"name": "copy", "params": {"bits": 8}}, "seed": 0, "samples": 32, "specs": []},
        "cached": False, "error": None, "created_at": "2025-01-01T12:00:00.000Z",
        "started_at": "2025-01-01T12:00:00.100Z", "finished_at": None, "result": None,
    }]})


@lru_cache(maxsize=None)
def job_out_model(kind_names: tuple[str, ...]) -> type[JobOut]:
    """JobOut whose `kind` is one of these names: an app serving other kinds than `KINDS`
    documents and validates its own (the same model when the kinds are `KINDS`)."""
    if kind_names == tuple(KINDS):
        return JobOut
    return create_model("JobOut", __base__=JobOut, __module__=__name__, kind=(Literal[kind_names], ...))


# -- kinds ------------------------------------------------------------------------------------------

class LimitOut(BaseModel):
    minimum: int | float | None = None
    maximum: int | float | None = Field(None, description="the tighter of the schema's and this server's limit")
    default: int | float | None = None


class KindOut(BaseModel):
    name: str = Field(description='a job kind, or "trace" (synchronous)')
    summary: str
    route: str = Field(description="the route that starts it, e.g. /api/checkpoints/{checkpoint_id}/report")
    method: Literal["POST"]
    limits: dict[str, LimitOut] = Field(description="each numeric request field's range and default")
    task_param_max: int = Field(description="the largest integer task parameter a request may set on this server")
    budget: dict[str, int | float] = Field(
        description="this server's limits on what one request may cost, by setting name (max_steps, ...)")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "trace", "summary": "Run the model on a task sample (synchronous)",
        "route": "/api/checkpoints/{checkpoint_id}/trace", "method": "POST",
        "limits": {"seed": {"minimum": 0, "maximum": 2**31 - 1, "default": 0},
                   "samples": {"minimum": 1, "maximum": 16, "default": 1}},
        "task_param_max": 4096,
        "budget": {"max_steps": 4096, "trace_max_bytes": 16777216, "trace_max_work": 2000000000,
                   "worker_memory_mb": 4096, "trace_timeout_s": 30, "trace_max_samples": 16},
    }]})
