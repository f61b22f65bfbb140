"""The full reliance report: ablations, patching and gradients combined into a verdict,
which the checkpoint then shows as its badge."""
from __future__ import annotations

from pydantic import ConfigDict, Field

from mnemoscope.analysis.report import PATCH_PAIRS, analyze

from ..request_base import JobRequest
from ..settings import Settings
from .base import JobKind, JobLoad, recorded_sites


class ReportRequest(JobRequest):
    samples: int = Field(32, ge=2, le=512, description="at least 2: resample ablation swaps sequences")

    model_config = ConfigDict(json_schema_extra={"examples": [{"samples": 32, "seed": 0}]})


def normalize(record: dict, body: ReportRequest, settings: Settings) -> dict:
    return {"samples": body.samples}


def run(model, task, request: dict, progress):
    return analyze(model, task, samples=request["samples"], seed=request["seed"], progress=progress)


def summarize(result: dict) -> dict:
    """The verdict and score of a stored report result (for the checkpoint's badge)."""
    data = result.get("data") if isinstance(result, dict) else None
    reliance = data.get("reliance") if isinstance(data, dict) else None
    reliance = reliance if isinstance(reliance, dict) else {}
    verdict, score = reliance.get("verdict"), reliance.get("score")
    return {
        "verdict": verdict if isinstance(verdict, str) else None,
        "score": float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
    }


def set_verdict(store, job: dict, summary: dict) -> None:
    """The badge shows the latest finished report, computed or reused."""
    store.set_verdict(job["checkpoint_id"], summary.get("verdict"), summary.get("score"), job["id"])


def cost(record: dict, request: dict, steps: int) -> JobLoad:
    """The report's stages over `samples` rows: a trace, reliance, one ablation per site,
    entropy, gradients (three passes) and utilisation; plus patching every read and
    bypass site at every step with `PATCH_PAIRS` pairs, counted in rows of the samples."""
    samples = request["samples"]
    sites = recorded_sites(record)
    patched = len(recorded_sites(record, "read", "bypass"))
    pairs = min(samples, PATCH_PAIRS)
    passes = 8 + len(sites) + pairs / samples * (2 + patched * steps)
    return JobLoad(rows=samples, passes=passes, sites=tuple(sites), lower=("samples",))


REPORT = JobKind(
    name="report",
    summary="Start a full reliance report",
    description="Ablations, patching and gradients combined into a verdict; when done, the checkpoint's "
                "`verdict` shows it.",
    request_model=ReportRequest,
    normalize=normalize,
    run=run,
    summarize=summarize,
    on_done=set_verdict,
    cost=cost,
)
