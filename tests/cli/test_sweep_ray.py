"""The ray executor: the tiny sweep (4 points) through a real local Ray instance gives the
local executor's results.

Ray's processes talk to each other over the machine's external interface even when told
127.0.0.1, and tests may send traffic to loopback only; so the Ray run happens inside a
fresh network namespace that has nothing but loopback (`unshare -n`, root; `unshare -rn`
otherwise), which ends with the command. Without `unshare` this test fails: it never skips.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnemoscope.cli.sweep import run_sweep
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.sweep_spec import load_sweep

TINY = Path(__file__).resolve().parents[2] / "sweeps" / "tiny.toml"
# what must be equal: training is seeded and single-threaded, the analysis seeded
SAME = ("key", "seed", "config.controller_size", "verdict", "necessity", "necessity_lo", "necessity_hi",
        "sufficiency", "metric", "metric_ablated", "chance", "prob_change", "memory_share", "steps")


def raylets() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True)
    return set(found.stdout.split())


def in_loopback_namespace(command: list[str]) -> list[str]:
    unshare = shutil.which("unshare")
    assert unshare and shutil.which("ip"), "the Ray test needs `unshare` and `ip` (util-linux, iproute2)"
    flags = "-n" if os.geteuid() == 0 else "-rn"
    return [unshare, flags, "sh", "-c", "ip link set lo up && exec " + shlex.join(command)]


@pytest.mark.slow
def test_ray_executor_gives_the_local_executors_results(tmp_path):
    before = raylets()
    local = run_sweep(load_sweep(TINY), tmp_path / "local", workers=1, log=lambda _: None)
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "mnemoscope.cli", "sweep", "run", str(TINY), "--out", str(out),
               "--executor", "ray", "--workers", "2", "--no-progress"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        run = subprocess.run(in_loopback_namespace(command), capture_output=True, text=True, timeout=400, env=env)
    finally:
        assert raylets() <= before, "a raylet outlived the sweep"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "on the ray executor" in run.stdout and "Started a local Ray instance" in run.stdout + run.stderr

    from mnemoscope.server.services.sweeps import read_results

    remote = read_results(out)
    assert remote is not None and len(remote["rows"]) == len(local["rows"]) == 4
    for mine, theirs in zip(local["rows"], remote["rows"]):
        assert {k: mine[k] for k in SAME} == {k: theirs[k] for k in SAME}
        a = load_checkpoint(tmp_path / "local" / mine["checkpoint"]).model.state_dict()
        b = load_checkpoint(out / theirs["checkpoint"]).model.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
