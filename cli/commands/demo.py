"""`mnemoscope demo`: the server with the bundled model zoo, ready to explore, offline.

    mnemoscope demo                       # http://127.0.0.1:8000/, opens a browser where there is one
    mnemoscope demo --host 0.0.0.0 --no-browser --allow-remote     # what the Dockerfile runs

The zoo's checkpoints (mnemoscope/zoo/, listed in its index.json) go into the data directory's
store the way uploads do: validated by the safe loader and stored under their sha256, so
starting the demo again finds them already there and adds nothing. Each zoo checkpoint's
verdict comes from the zoo's index.json (computed with `mnemoscope analyze`'s defaults when
the zoo was built) when the index was computed by this analysis engine (ANALYSIS_VERSION) on
these very bytes; a checkpoint still without a verdict gets a report job (the same request),
whose result is kept in the data directory, so it is computed once.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import sys
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from ..errors import CLIError
from . import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serve.add_arguments(parser)
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--no-reports", action="store_true",
                        help="do not queue report jobs for zoo checkpoints without a verdict")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def register_file(store, path: Path) -> tuple[dict, bool]:
    """Put one local checkpoint into the store as an upload of it would: safe-loader
    validation, content-addressed. Returns (record, created); the same bytes again are found,
    not copied."""
    from mnemoscope.server.services.checkpoints import new_record, validate

    digest = sha256_file(path)
    existing = store.get_checkpoint_by_sha(digest)
    if existing is not None:
        return existing, False
    staged = store.new_tmp_path(".safetensors")
    try:
        shutil.copyfile(path, staged)
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        info = validate(staged, path.name)
        record = new_record(digest, ".safetensors", "safetensors", path.name, path.stat().st_size, info)
        return store.add_checkpoint(staged, record)
    finally:
        staged.unlink(missing_ok=True)


def register_zoo(store, zoo_dir: Path | None = None) -> tuple[list[dict], int]:
    """Every zoo checkpoint in the store, in index order. Returns (records, newly added)."""
    from mnemoscope.models.zoo import zoo_files

    try:
        files = zoo_files(zoo_dir)
    except FileNotFoundError as exc:
        raise CLIError(f"the model zoo is missing from this installation ({exc})") from exc
    records, added = [], 0
    for path in files:
        if not path.is_file():
            raise CLIError(f"zoo checkpoint {path} is listed in index.json but missing; reinstall mnemoscope "
                           "or rebuild it with `mnemoscope zoo build`")
        record, created = register_file(store, path)
        records.append(record)
        added += created
    return records, added


def verdicts_from_index(store, records: list[dict], index: dict) -> int:
    """Give each zoo checkpoint without a verdict the one its index entry holds, when the
    index was computed by this analysis engine on the same bytes (sha256): what a report job
    would compute, without computing it. Returns how many verdicts were set."""
    from mnemoscope.analysis import ANALYSIS_VERSION

    if index.get("analysis_version") != ANALYSIS_VERSION:
        return 0  # an older engine's verdicts: the report jobs compute current ones
    by_sha = {e["sha256"]: e for e in index["checkpoints"] if e.get("sha256")}
    done = 0
    for record in records:
        current, entry = store.get_checkpoint(record["id"]), by_sha.get(record["sha256"])
        if current is None or current["verdict"] is not None or entry is None:
            continue
        store.set_verdict(record["id"], entry["reliance"]["verdict"], entry["reliance"]["score"], None)
        done += 1
    return done


def queue_reports(app, records: list[dict]) -> int:
    """A report job for each zoo checkpoint that has no verdict yet (an identical job
    already queued or running is reused, a stored result is reused at once)."""
    from mnemoscope.server.kinds import REPORT
    from mnemoscope.server.services import jobs as job_service

    store, manager, settings = app.state.store, app.state.jobs, app.state.settings
    queued = 0
    for record in records:
        current = store.get_checkpoint(record["id"])
        if current is None or current["verdict"] is not None:
            continue
        job = job_service.submit(store, manager, settings, record["id"], REPORT, REPORT.request_model())
        queued += job["status"] in ("queued", "running")
    return queued


def display_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # reachable from this machine; the bind address itself is not a URL
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def can_open_browser() -> bool:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False  # a text-mode browser would take over this terminal
    import webbrowser

    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def bind(host: str, port: int) -> socket.socket:
    """Bind before starting anything, so a busy port is a clear error and port 0 gets a real number."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CLIError(f"cannot resolve --host {host!r}: {exc}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another server running there? "
                       "Choose another --port") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    from mnemoscope.server.settings import check_bind

    settings = serve.settings_from_args(args)
    refusal = check_bind(settings)
    if refusal:
        raise CLIError(refusal)

    import torch
    import uvicorn

    from mnemoscope.server.app import create_app
    from mnemoscope.server.errors import StartupError

    torch.set_num_threads(settings.worker_threads)
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    url = display_url(settings.host, port)
    try:
        app = create_app(settings)
        records, added = register_zoo(app.state.store)
        from mnemoscope.models.zoo import load_index

        from_index = verdicts_from_index(app.state.store, records, load_index())
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot use data directory {settings.data_dir}: {exc}") from exc
    except StartupError as exc:
        sock.close()
        raise CLIError(str(exc)) from exc
    except BaseException:
        sock.close()
        raise

    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        async with original(app_) as state:
            from starlette.concurrency import run_in_threadpool

            queued = 0 if args.no_reports else await run_in_threadpool(queue_reports, app_, records)
            print(f"mnemoscope demo: {len(records)} zoo checkpoints ({added} new) in {app.state.store.root}; "
                  f"{from_index} verdict(s) from the zoo's index, {queued} report job(s) queued", flush=True)
            print(f"mnemoscope demo: open {url}", flush=True)
            if not args.no_browser and can_open_browser():
                import webbrowser

                threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
            yield state

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(app, log_level=settings.log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
