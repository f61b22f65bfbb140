"""GET /api/sweeps: the sweeps `mnemoscope sweep run` wrote under the data directory, their
results tables, figures and checkpoint files. Read-only: sweeps are run by the command line."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from ..deps import SettingsDep, StoreDep
from ..services import sweeps as service
from . import errors

router = APIRouter(prefix="/api/sweeps", tags=["sweeps"])


class SweepSummaryOut(BaseModel):
    id: str = Field(description="the sweep's folder under <data_dir>/sweeps/ (its name)")
    name: str
    description: str
    knobs: list[str] = Field(description="knob paths, e.g. remedies.controller_size, in the sweep file's order")
    x: str | None = Field(description="the knob along the figures' x axis (null: the seed)")
    seeds: list[int]
    points_total: int
    points_done: int
    version: str | None = Field(None, description="the mnemoscope version that wrote the results")
    updated_at: str | None = None


class SweepOut(SweepSummaryOut):
    columns: list[str] = Field(description="the table's columns: key, seed, one per knob, then the measures")
    rows: list[dict[str, Any]] = Field(
        description="one per finished point: knob values, verdict, necessity/sufficiency with their 95% "
                    "intervals, task metric, checkpoint (a file of the sweep) and checkpoint_id (the same "
                    "bytes in this server's store, else null)")
    figures: dict[str, dict[str, Any]] = Field(
        description="measure (necessity, sufficiency, metric) -> plotly figure JSON: the measure against the "
                    "x knob, one line per combination of the other knobs, seeds as points")


@router.get("", response_model=list[SweepSummaryOut], summary="List the sweeps under the data directory")
def list_sweeps(settings: SettingsDep) -> list[dict]:
    return service.list_sweeps(settings.data_dir)


@router.get("/{sweep_id}", response_model=SweepOut, responses=errors(404),
            summary="One sweep: its results table and figures")
def get_sweep(sweep_id: str, settings: SettingsDep, store: StoreDep) -> dict:
    return service.get_sweep(settings.data_dir, sweep_id, store)


@router.get(
    "/{sweep_id}/checkpoints/{filename}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "a checkpoint the sweep trained (<train_key>.safetensors)"}, **errors(404)},
    summary="Download a sweep point's checkpoint",
)
def download_checkpoint(sweep_id: str, filename: str, settings: SettingsDep) -> FileResponse:
    path = service.checkpoint_file(settings.data_dir, sweep_id, filename)
    return FileResponse(path, media_type="application/octet-stream", filename=f"{sweep_id}-{filename}")
