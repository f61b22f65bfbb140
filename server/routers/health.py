import time

from fastapi import APIRouter, Request

from mnemoscope import __version__

from ..schemas import HealthOut

router = APIRouter(prefix="/api", tags=["health"])


# async and free of I/O: answers from the event loop even when every thread is busy
@router.get("/health", response_model=HealthOut, summary="Is the server up?")
async def health(request: Request) -> HealthOut:
    state = request.app.state
    return HealthOut(
        status="ok",
        version=__version__,
        uptime_s=round(time.time() - state.started_at, 3),
        workers=state.jobs.stats(),
    )
