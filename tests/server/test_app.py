"""The assembled app: the documented routes, their error shapes and examples."""
from __future__ import annotations

EXPECTED = {
    ("get", "/api/health"),
    ("post", "/api/checkpoints"), ("get", "/api/checkpoints"),
    ("get", "/api/checkpoints/{checkpoint_id}"), ("delete", "/api/checkpoints/{checkpoint_id}"),
    ("get", "/api/checkpoints/{checkpoint_id}/file"), ("get", "/api/checkpoints/{checkpoint_id}/sites"),
    ("post", "/api/checkpoints/{checkpoint_id}/trace"),
    ("post", "/api/checkpoints/{checkpoint_id}/ablations"), ("post", "/api/checkpoints/{checkpoint_id}/patching"),
    ("post", "/api/checkpoints/{checkpoint_id}/gradients"), ("post", "/api/checkpoints/{checkpoint_id}/report"),
    ("get", "/api/jobs"), ("get", "/api/jobs/{job_id}"), ("delete", "/api/jobs/{job_id}"),
    ("get", "/api/kinds"),
    ("get", "/api/sweeps"), ("get", "/api/sweeps/{sweep_id}"), ("get", "/api/sweeps/{sweep_id}/checkpoints/{filename}"),
    ("post", "/api/probes"), ("get", "/api/probes"), ("get", "/api/probes/{probe_id}"), ("delete", "/api/probes/{probe_id}"),
}
MUTATING = {(m, p) for m, p in EXPECTED if m in ("post", "delete") and not p.endswith("/trace")}


def test_exactly_the_documented_routes(client):
    spec = client.get("/openapi.json").json()
    found = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert found == EXPECTED
    assert client.get("/docs").status_code == 200


def test_errors_are_documented_as_sent(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "422" in op["responses"]:
                schema = op["responses"]["422"]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)
            # mutating routes declare the bearer scheme (used when MNEMOSCOPE_TOKEN is set)
            assert ("security" in op) == ((method, path) in MUTATING), (method, path)


def test_request_bodies_have_examples(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("TraceRequest", "AblationsRequest", "PatchingRequest", "GradientsRequest", "ReportRequest",
                 "CheckpointOut", "JobOut", "KindOut"):
        assert schemas[name].get("examples"), name


def test_upload_is_documented_as_multipart(client):
    op = client.get("/openapi.json").json()["paths"]["/api/checkpoints"]["post"]
    body = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"] and body["properties"]["file"]["format"] == "binary"
    assert {"200", "201", "401", "413", "415", "422"} <= set(op["responses"])
