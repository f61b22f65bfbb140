"""POST/GET/DELETE /api/probes, and jobs that name a probe as their task, on a tiny
Hugging Face model built from a config (nothing downloaded)."""
from __future__ import annotations

import io
import json
import os

import pytest
from fastapi.testclient import TestClient

from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings

from .conftest import wait_for_job

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

VOCAB = 64
PAIRS = [
    {"clean": [5, 9, 3, 7], "corrupted": [5, 9, 3, 8], "answer": 40, "corrupted_answer": 41},
    {"clean": [11, 12, 13], "corrupted": [14, 12, 13], "answer": 20, "corrupted_answer": 21},
    {"clean": [1, 2], "corrupted": [1, 3], "answer": 4},
]


def jsonl(pairs) -> bytes:
    return "".join(json.dumps(p) + "\n" for p in pairs).encode()


def post_probe(client, content: bytes, filename: str = "ioi.jsonl", tokenizer: bytes | None = None, **kw):
    files = {"file": (filename, io.BytesIO(content), "application/jsonl")}
    if tokenizer is not None:
        files["tokenizer"] = ("tokenizer.json", io.BytesIO(tokenizer), "application/json")
    return client.post("/api/probes", files=files, **kw)


@pytest.fixture
def hf_checkpoint(tmp_path, upload) -> dict:
    """A tiny Mamba (arch "hf", vocabulary 64) uploaded as a checkpoint."""
    import torch

    from mnemoscope.models.checkpoints import save_checkpoint
    from mnemoscope.models.hf import HFConfig, HFModel

    torch.manual_seed(0)
    config = dict(model_type="mamba", vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, state_size=4,
                  time_step_rank=2, use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = HFModel(HFConfig(config)).eval()
    path = tmp_path / "tiny-hf.safetensors"
    save_checkpoint(path, model, task={"name": "induction", "params": {"vocab_size": VOCAB, "length": 4}},
                    name="tiny-hf")
    response = upload(path.read_bytes(), "tiny-hf.safetensors")
    assert response.status_code == 201, response.text
    return response.json()


def test_upload_list_get_delete(client):
    response = post_probe(client, jsonl(PAIRS), data={"name": "my IOI"})
    assert response.status_code == 201, response.text
    probe = response.json()
    assert probe["name"] == "my IOI" and probe["filename"] == "ioi.jsonl"
    assert (probe["pairs"], probe["patchable"], probe["max_tokens"], probe["max_id"]) == (3, 2, 4, 41)
    assert probe["task"] == {"name": "prompt_pairs", "params": {"probe": probe["id"]}}
    assert not probe["tokenized"]

    again = post_probe(client, jsonl(PAIRS), filename="copy.jsonl")  # same pairs, same probe
    assert again.status_code == 200 and again.json()["id"] == probe["id"]
    assert [p["id"] for p in client.get("/api/probes").json()] == [probe["id"]]

    detail = client.get(f"/api/probes/{probe['id']}").json()
    assert detail["items"] == [{**p, "corrupted_answer": p.get("corrupted_answer")} for p in PAIRS]

    assert client.delete(f"/api/probes/{probe['id']}").status_code == 204
    assert client.get(f"/api/probes/{probe['id']}").status_code == 404
    assert client.delete(f"/api/probes/{probe['id']}").status_code == 404
    assert client.get("/api/probes").json() == []
    assert client.app.state.store.consistency_problems() == []


@pytest.mark.parametrize("data, status, message", [
    (jsonl(PAIRS[:1]) + b'{"clean": [1, 2]\n', 422, "line 2: not valid JSON"),
    (b'{"clean": [1, 2], "answer": 4}\n', 422, "line 1: missing corrupted"),
    (b'{"clean": [1, 2], "corrupted": [1], "answer": 4}\n', 422, "line 1: clean has 2 tokens and corrupted 1"),
    (b'{"clean": "a b", "corrupted": "a c", "answer": "d"}\n', 422, "line 1: clean is a string, but there is no tokenizer"),
    (b'{"clean": [1, -2], "corrupted": [1, 3], "answer": 4}\n', 422, r"line 1: clean[1]: token id -2 is outside"),
    (jsonl(PAIRS[2:]) * 257, 422, "line 257: a probe holds at most 256 pairs"),
    (b"\xff\xfe\n", 422, "not UTF-8"),
    (b"\n\n", 422, "no pairs"),
    (jsonl(PAIRS) * 20_000, 413, "larger than"),
])
def test_bad_probes_are_refused_naming_the_problem(client, data, status, message):
    response = post_probe(client, data)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert client.get("/api/probes").json() == []
    assert list(client.app.state.store.probe_dir.iterdir()) == []


def test_upload_needs_multipart_with_a_file(client):
    assert client.post("/api/probes", content=jsonl(PAIRS), headers={"content-type": "application/jsonl"}
                       ).status_code == 415
    response = client.post("/api/probes", files={"other": ("x.jsonl", io.BytesIO(jsonl(PAIRS)))})
    assert response.status_code == 422 and "field `file`" in response.json()["detail"]


def test_strings_are_tokenized_with_an_uploaded_tokenizer(client):
    from tests.models.test_probes import tiny_tokenizer_json

    line = {"clean": "when mary and john went out john gave it to",
            "corrupted": "when mary and john went out mary gave it to", "answer": "mary", "corrupted_answer": "john"}
    response = post_probe(client, jsonl([line]), tokenizer=tiny_tokenizer_json().encode())
    assert response.status_code == 201, response.text
    probe = response.json()
    assert probe["tokenized"] and probe["max_tokens"] == 10
    (item,) = client.get(f"/api/probes/{probe['id']}").json()["items"]
    assert item["answer"] == 2 and item["corrupted_answer"] == 4 and item["clean"][6] == 4
    bad = post_probe(client, jsonl([line]), tokenizer=b"{not a tokenizer")
    assert bad.status_code == 422 and "tokenizer.json could not be read" in bad.json()["detail"]


def test_changes_need_the_token(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", workers=1, dashboard=False, auto_analyze=False, token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert post_probe(client, jsonl(PAIRS)).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        probe = post_probe(client, jsonl(PAIRS), headers=auth).json()
        assert client.get("/api/probes").status_code == 200  # reading needs none
        assert client.delete(f"/api/probes/{probe['id']}").status_code == 401
        assert client.delete(f"/api/probes/{probe['id']}", headers=auth).status_code == 204


def test_patching_and_report_jobs_run_on_a_probe(client, hf_checkpoint):
    probe = post_probe(client, jsonl(PAIRS)).json()
    task = {"name": "prompt_pairs", "params": {"probe": probe["id"]}}
    ck = hf_checkpoint["id"]

    job = client.post(f"/api/checkpoints/{ck}/patching", json={"task": task, "pairs": 4}).json()
    assert job["request"]["task"]["params"]["probe"] == probe["id"]
    assert job["request"]["task"]["params"]["vocab_size"] == VOCAB  # the model's
    assert len(job["request"]["task"]["params"]["pairs"]) == 3  # the worker needs no store
    done = wait_for_job(client, job["id"])
    assert done["status"] == "done", done
    result = client.get(f"/api/jobs/{job['id']}").json()["result"]["data"]
    assert sum(result["differs_per_step"]) >= 1 and result["sites"]

    report = client.post(f"/api/checkpoints/{ck}/report", json={"task": task, "samples": 4}).json()
    done = wait_for_job(client, report["id"])
    assert done["status"] == "done", done

    # the probe can go; the jobs that used it keep their results
    assert client.delete(f"/api/probes/{probe['id']}").status_code == 204
    assert client.get(f"/api/jobs/{job['id']}").json()["result"] is not None


def test_job_task_checks_on_a_language_model(client, hf_checkpoint):
    """Unknown probes, probes beyond the model's vocabulary; MQAR over an id range."""
    ck = hf_checkpoint["id"]
    response = client.post(f"/api/checkpoints/{ck}/patching",
                           json={"task": {"name": "prompt_pairs", "params": {"probe": "nonesuch"}}})
    assert response.status_code == 422 and "no probe with id 'nonesuch'" in response.json()["detail"]
    wide = post_probe(client, jsonl([{"clean": [1, 100], "corrupted": [1, 3], "answer": 4}])).json()
    response = client.post(f"/api/checkpoints/{ck}/report",
                           json={"task": {"name": "prompt_pairs", "params": {"probe": wide["id"]}}})
    assert response.status_code == 422
    assert "uses token ids up to 100, but this model's vocabulary has 64 ids" in response.json()["detail"]

    # MQAR over an id range: vocab_size and token ids are bounded by the model, not by
    # max_task_param (256 here), which still bounds the lengths
    response = client.post(f"/api/checkpoints/{ck}/patching", json={
        "task": {"name": "mqar", "params": {"vocab_size": VOCAB, "seq_len": 16, "num_pairs": 2, "id_low": 10,
                                            "id_high": 60, "filler": 3}}, "pairs": 2})
    assert response.status_code in (200, 201, 202), response.text
    assert response.json()["request"]["task"]["params"]["id_low"] == 10
    too_long = client.post(f"/api/checkpoints/{ck}/patching", json={
        "task": {"name": "mqar", "params": {"vocab_size": VOCAB, "seq_len": 1000}}})
    assert too_long.status_code == 422 and "larger than this server allows" in too_long.json()["detail"]
    # a Hugging Face model's vocabulary is read from its config.json: a task of another one is refused
    wrong_vocab = client.post(f"/api/checkpoints/{ck}/patching",
                              json={"task": {"name": "mqar", "params": {"vocab_size": 128}}})
    assert wrong_vocab.status_code == 422 and "built for vocab_size 64" in wrong_vocab.json()["detail"]
