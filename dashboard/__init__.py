"""The Dash dashboard, served by `mnemoscope serve` at /dashboard/ (see app.py)."""


def mount_dashboard(fastapi_app, settings=None, **kwargs):
    """Mount the dashboard on a FastAPI app (imports Dash only when called)."""
    from .app import mount_dashboard as _mount

    return _mount(fastapi_app, settings, **kwargs)


__all__ = ["mount_dashboard"]
