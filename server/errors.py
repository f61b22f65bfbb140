"""Errors the services raise; the app turns each into its HTTP status with
`{"detail": message}`, plus the error's `extra` fields and `headers` when it has them."""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.extra = dict(extra or {})  # more JSON fields beside `detail` (e.g. `budget`)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, **self.extra}


class NotFound(ServiceError):
    status_code = 404


class Invalid(ServiceError):
    """The request is well-formed but cannot be done (bad checkpoint, unknown site, task mismatch)."""

    status_code = 422


class OverBudget(Invalid):
    """The request would cost more than this server allows; `budget` says which limit,
    by how much, and which request fields to lower (see server/budget.py)."""

    def __init__(self, message: str, budget: dict[str, Any]):
        super().__init__(message, extra={"budget": budget})
        self.budget = budget


class TooLarge(ServiceError):
    status_code = 413


class UnsupportedMedia(ServiceError):
    status_code = 415


class TooManyRequests(ServiceError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(int(retry_after_s))})


class Unavailable(ServiceError):
    status_code = 503


BY_STATUS: dict[int, type[ServiceError]] = {
    cls.status_code: cls for cls in (NotFound, Invalid, TooLarge, UnsupportedMedia, Unavailable)
}


def from_status(status: int, message: str, extra: dict[str, Any] | None = None) -> ServiceError:
    """The service error for a status and message relayed from a worker process."""
    error = BY_STATUS.get(status, ServiceError)(message)
    if status not in BY_STATUS:
        error.status_code = status
    error.extra = dict(extra or {})
    return error


class StartupError(RuntimeError):
    """The server cannot start as configured (e.g. the dashboard cannot be mounted); the
    command line prints the message and exits instead of serving a half-working app."""
