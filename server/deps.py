"""Dependencies the routers declare: the settings, the store, the job manager, the app's
job kinds, the trace sandbox, and the bearer-token check on mutating routes."""
from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .jobs import JobManager
from .kinds import JobKind
from .sandbox import Sandbox
from .settings import Settings
from .store import Store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs



def get_kinds(request: Request) -> dict[str, JobKind]:
    return request.app.state.kinds


def get_sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
KindsDep = Annotated[dict[str, JobKind], Depends(get_kinds)]
SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]

_bearer = HTTPBearer(
    auto_error=False,
    description="Needed on mutating routes when the server runs with MNEMOSCOPE_TOKEN set.",
)


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.token_value
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise HTTPException(
            status_code=401,
            detail="this server requires 'Authorization: Bearer <token>' (its MNEMOSCOPE_TOKEN) for changes",
            headers={"WWW-Authenticate": "Bearer"},
        )


AuthDep = Annotated[None, Depends(require_token)]
