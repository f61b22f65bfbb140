"""Schemathesis against the app's own /openapi.json: generated requests, bounded in number
and time, must never get a 5xx or a response that contradicts the documented schema."""
from __future__ import annotations

import zlib

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings

from .conftest import tiny_checkpoint_bytes  # noqa: E402

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openapi")
    app = create_app(Settings(data_dir=tmp / "data", workers=1, dashboard=False, max_upload_bytes=64 * 1024,
                              trace_max_samples=4, max_task_param=16, job_timeout_s=20, worker_nice=0))
    with TestClient(app) as client:
        r = client.post("/api/checkpoints", files={"file": ("t.safetensors", tiny_checkpoint_bytes(tmp))})
        assert r.status_code == 201
        app.state.fuzz_checkpoint = r.json()["id"]
        yield app


def test_no_server_errors_and_responses_match_the_schema(fuzzed_app):
    # Schemathesis used as a library of Hypothesis strategies (one per operation), not
    # through its pytest plugin: the plugin reaches into pytest internals that change
    # between pytest releases inside one major version.
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    for operation in operations:
        _fuzz(operation, fuzzed_app)


def _fuzz(operation, fuzzed_app) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def check(case):
        # half the cases aim at a real checkpoint, so bodies reach the services instead of a 404
        path = case.path_parameters or {}
        if "checkpoint_id" in path and case.method != "DELETE" and zlib.crc32(repr(case.body).encode()) % 2:
            path["checkpoint_id"] = fuzzed_app.state.fuzz_checkpoint
        case.call_and_validate(checks=CHECKS)

    try:
        check()
    except Exception as exc:
        raise AssertionError(f"{operation.label}: {exc}") from exc
