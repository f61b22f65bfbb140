"""Task parameters from requests: every value a task cannot sample with is a 422 that
names the parameter and its range, never a crash inside torch (500)."""
from __future__ import annotations

import io
import json

import pytest
import torch

from mnemoscope.models import build_model
from mnemoscope.models.checkpoints import save_checkpoint
from mnemoscope.models.tasks import make_task


@pytest.fixture
def mqar_checkpoint(client, tmp_path) -> dict:
    """An LSTM that fits the default MQAR task (64 token ids in, 64 classes out)."""
    torch.manual_seed(0)
    task = make_task("mqar")
    model = build_model("lstm", dict(input_size=task.input_size, output_size=task.output_size, hidden_size=8))
    path = save_checkpoint(tmp_path / "mqar.safetensors", model, task=task.spec())
    r = client.post("/api/checkpoints", files={"file": ("mqar.safetensors", io.BytesIO(path.read_bytes()))})
    assert r.status_code == 201, r.text
    return r.json()


def test_mqar_trace_works(client, mqar_checkpoint):
    r = client.post(f"/api/checkpoints/{mqar_checkpoint['id']}/trace", json={"samples": 1, "sites": ["output"]})
    assert r.status_code == 200, r.text
    assert r.json()["inputs"]["shape"] == [1, 64]


@pytest.mark.parametrize("power_a", ["700", "1e10", "Infinity", "-Infinity", "NaN", "0", "true", '"0.5"'])
def test_mqar_power_a_out_of_range_is_422(client, mqar_checkpoint, power_a):
    # raw JSON: Python's json (what the server parses with) reads Infinity and NaN
    body = '{"samples": 1, "task": {"params": {"power_a": %s}}}' % power_a
    r = client.post(f"/api/checkpoints/{mqar_checkpoint['id']}/trace", content=body.encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "power_a" in detail
    assert "[0.001, 16]" in detail or "larger than this server allows" in detail  # 700: an int over the cap


@pytest.mark.parametrize("params, fragment", [
    ({"num_pairs": 2.5}, "num_pairs must be an integer"),
    ({"seq_len": 3}, "seq_len must be an integer in [4, 65536]"),
    ({"vocab_size": True}, "vocab_size must be an integer"),
])
def test_mqar_integer_parameters_are_checked(client, mqar_checkpoint, params, fragment):
    r = client.post(f"/api/checkpoints/{mqar_checkpoint['id']}/trace", content=json.dumps(
        {"samples": 1, "task": {"params": params}}).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
