"""Errors the services raise; the app turns each into its HTTP status with `{"detail": message}`."""
from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status_code = 404


class Invalid(ServiceError):
    """The request is well-formed but cannot be done (bad checkpoint, unknown site, task mismatch)."""

    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


class UnsupportedMedia(ServiceError):
    status_code = 415


class Unavailable(ServiceError):
    status_code = 503


class StartupError(RuntimeError):
    """The server cannot start as configured (e.g. the dashboard cannot be mounted); the
    command line prints the message and exits instead of serving a half-working app."""
