"""`Settings.executor`: report jobs computed on a Ray cluster give the local job pool's result,
through the same queue (server/remote_jobs.py).

The Ray run happens inside a network namespace with nothing but loopback, as the sweeps' Ray
test does (tests/cli/test_sweep_ray.py says why); the cluster is started there with
`ray start --head` and stopped with the command. Without `unshare` this test fails."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mnemoscope.models import zoo
from mnemoscope.server.remote_jobs import execute_on
from mnemoscope.server.settings import Settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ray_report_job import report, settings  # noqa: E402

sys.path.remove(str(HERE))
sys.path.insert(0, str(HERE.parent / "cli"))
from test_sweep_ray import in_loopback_namespace, raylets  # noqa: E402

sys.path.remove(str(HERE.parent / "cli"))

CHECKPOINT = zoo.default_zoo_dir() / "hybrid-short-window.safetensors"
PORT = 6391


def test_the_executor_settings():
    assert Settings().executor == "local" and Settings().ray_address is None
    with pytest.raises(ValidationError, match="needs ray_address"):
        Settings(executor="ray")
    with pytest.raises(ValidationError, match="goes with executor=ray"):
        Settings(ray_address="head:6379")
    if importlib.util.find_spec("ray") is not None:
        assert Settings(executor="ray", ray_address="head:6379").ray_address == "head:6379"


def test_other_kinds_and_the_local_executor_run_in_the_worker(tmp_path):
    calls = []

    def execute(kind, path, request, progress):
        calls.append(kind)
        return {"kind": kind}, {}

    # an address that does not exist: connecting to it would fail, so these never try
    assert execute_on("ray", "nowhere:1", 1, execute, "ablations", tmp_path / "x", {}, None) == ({"kind": "ablations"}, {})
    assert execute_on("local", None, 1, execute, "report", tmp_path / "x", {}, None) == ({"kind": "report"}, {})
    assert calls == ["ablations", "report"]


@pytest.mark.slow
def test_a_report_job_on_ray_equals_the_local_one(tmp_path):
    local = report(settings(tmp_path / "local"), CHECKPOINT)
    assert local["status"] == "done", local
    out = tmp_path / "ray.json"
    ray = shlex.join([sys.executable, "-m", "ray.scripts.scripts"])  # Ray's command line, from this Python
    script = " && ".join([
        f"{ray} start --head --port {PORT} --num-cpus 2 --include-dashboard=false --disable-usage-stats",
        shlex.join([sys.executable, str(HERE / "ray_report_job.py"), f"127.0.0.1:{PORT}", str(CHECKPOINT), str(out)]),
    ])
    command = ["sh", "-c", f"{script}; rc=$?; {ray} stop --force >/dev/null 2>&1; exit $rc"]
    before = raylets()
    # no token: nothing outside the namespace can reach this cluster
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    try:
        run = subprocess.run(in_loopback_namespace(command), capture_output=True, text=True, timeout=500, env=env)
    finally:
        assert raylets() <= before, "a raylet outlived the test"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert remote["status"] == "done", remote.get("error")
    assert "sent to the ray executor" in remote["messages"]
    for job in (local, remote):
        assert job["result"]["data"].pop("timings")  # wall-clock seconds: the one thing that may differ
    assert remote["result"] == local["result"]
    assert remote["result"]["data"]["reliance"]["verdict"] == local["result"]["data"]["reliance"]["verdict"]
