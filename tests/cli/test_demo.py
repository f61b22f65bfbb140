"""`mnemoscope demo` as a real subprocess: the zoo is listed with its index's verdicts, and a
second start adds nothing."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mnemoscope.models.zoo import load_index
from mnemoscope.cli.commands import demo
from mnemoscope.server.store import Store

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    def __init__(self, data_dir: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MNEMOSCOPE_DASHBOARD": "false", "MNEMOSCOPE_TOKEN": ""}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mnemoscope.cli", "demo", "--no-browser", "--port", str(self.port),
             "--data-dir", str(data_dir), "--workers", "1", "--log-level", "warning", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if "mnemoscope demo: open" in line:
                self.ready.set()
        self.ready.set()

    def wait(self, timeout: float = 90.0) -> None:
        assert self.ready.wait(timeout), f"demo did not start within {timeout}s: {''.join(self.lines)}"
        assert self.proc.poll() is None, "".join(self.lines)
        deadline = time.monotonic() + 30
        while True:  # the URL is printed at start-up, a moment before uvicorn accepts connections
            try:
                httpx.get(self.url + "/api/health", timeout=5).raise_for_status()
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, "".join(self.lines)
                time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def test_demo_lists_the_zoo_and_does_not_duplicate_it(tmp_path):
    index = load_index()
    expected = {e["name"] for e in index["checkpoints"]}
    data = tmp_path / "data"

    first = Demo(data)
    try:
        first.wait()
        listed = httpx.get(first.url + "/api/checkpoints", timeout=10).json()
        assert {c["name"] for c in listed} == expected and len(listed) == len(expected)
        # the index is current (tests/cli/test_zoo_build.py): its verdicts are the badges, nothing is recomputed
        verdicts = {e["name"]: e["reliance"]["verdict"] for e in index["checkpoints"]}
        assert {c["name"]: c["verdict"] for c in listed} == verdicts
        jobs = httpx.get(first.url + "/api/jobs", params={"kind": "report", "limit": 500}, timeout=10).json()
        assert jobs == []
    finally:
        first.stop()
    out = "".join(first.lines)
    assert f"open http://127.0.0.1:{first.port}/" in out and f"{len(expected)} new" in out
    assert f"{len(expected)} verdict(s) from the zoo's index, 0 report job(s) queued" in out

    second = Demo(data)
    try:
        second.wait()
        again = httpx.get(second.url + "/api/checkpoints", timeout=10).json()
        assert sorted(c["id"] for c in again) == sorted(c["id"] for c in listed)
    finally:
        second.stop()
    assert "(0 new)" in "".join(second.lines)
    store = Store(data)
    try:
        assert len(store.list_checkpoints()) == len(expected)
        assert len(list(store.checkpoint_dir.iterdir())) == len(expected)
        assert store.consistency_problems() == []
    finally:
        store.close()


def test_busy_port_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mnemoscope.cli", "demo", "--no-browser", "--port", str(port),
             "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=120, env={**os.environ, "MNEMOSCOPE_DASHBOARD": "false"})
    assert done.returncode == 2 and "Choose another --port" in done.stderr


def test_remote_bind_needs_a_token_or_the_flag(tmp_path, capsys, monkeypatch):
    from mnemoscope import cli

    monkeypatch.delenv("MNEMOSCOPE_TOKEN", raising=False)
    assert cli.main(["demo", "--host", "0.0.0.0", "--no-browser", "--data-dir", str(tmp_path)]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    # the Dockerfile's flags parse
    args = cli.build_parser().parse_args(["demo", "--host", "0.0.0.0", "--port", "8000", "--no-browser",
                                          "--allow-remote"])
    assert args.no_browser and args.allow_remote and args.port == 8000


def test_urls_and_browser_detection(monkeypatch):
    assert demo.display_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert demo.display_url("::1", 8001) == "http://[::1]:8001/"
    assert demo.display_url("127.0.0.1", 5) == "http://127.0.0.1:5/"
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        assert demo.can_open_browser() is False


def test_register_file_is_idempotent(tmp_path):
    index = load_index()
    from mnemoscope.models.zoo import zoo_files

    path = zoo_files()[0]
    store = Store(tmp_path)
    try:
        record, created = demo.register_file(store, path)
        assert created and record["name"] == index["checkpoints"][0]["name"]
        again, created = demo.register_file(store, path)
        assert not created and again["id"] == record["id"]
        assert len(store.list_checkpoints()) == 1 and list(store.tmp_dir.iterdir()) == []
        assert store.checkpoint_path(record).read_bytes() == path.read_bytes()
    finally:
        store.close()
