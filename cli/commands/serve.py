"""`mnemoscope serve`: the REST API (and the dashboard, when installed) in one uvicorn process."""
from __future__ import annotations

import argparse

from ..errors import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; MNEMOSCOPE_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000; MNEMOSCOPE_PORT)")
    parser.add_argument("--data-dir", default=None,
                        help="checkpoints, results and index (default ./.mnemoscope; MNEMOSCOPE_DATA_DIR)")
    parser.add_argument("--workers", type=int, default=None, help="job worker processes (default 2; MNEMOSCOPE_WORKERS)")
    parser.add_argument("--allow-remote", action="store_true", default=None,
                        help="bind a non-loopback address even without MNEMOSCOPE_TOKEN (trusted networks only)")
    parser.add_argument("--log-level", default=None, choices=["critical", "error", "warning", "info", "debug"])


def settings_from_args(args: argparse.Namespace):
    from pydantic import ValidationError

    from mnemoscope.server.settings import Settings

    overrides = {key: value for key, value in {
        "host": args.host, "port": args.port, "data_dir": args.data_dir, "workers": args.workers,
        "allow_remote": args.allow_remote, "log_level": args.log_level,
    }.items() if value is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CLIError(f"invalid settings: {problems}") from exc


def run(args: argparse.Namespace) -> int:
    from mnemoscope.server.settings import check_bind

    settings = settings_from_args(args)
    refusal = check_bind(settings)
    if refusal:
        raise CLIError(refusal)

    import torch
    import uvicorn

    from mnemoscope.server.app import create_app
    from mnemoscope.server.errors import StartupError

    torch.set_num_threads(settings.worker_threads)  # traces run in this process; jobs in workers
    try:
        app = create_app(settings)
    except OSError as exc:
        raise CLIError(f"cannot use data directory {settings.data_dir}: {exc}") from exc
    except StartupError as exc:
        raise CLIError(str(exc)) from exc
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=5)
    return 0
