"""The API client: request shapes, and errors turned into sentences."""
from __future__ import annotations

import json

import httpx
import pytest

from mnemoscope.dashboard.api import ApiClient, ApiError, describe_error

from .conftest import KINDS


def client_with(handler, token=None) -> tuple[ApiClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return ApiClient("http://api.test", token=token, transport=httpx.MockTransport(record)), seen


def test_trace_sends_task_params_seed_and_sites():
    api, seen = client_with(lambda r: httpx.Response(200, json={"ok": True}))
    api.trace("abc", params={"min_length": 4, "max_length": 4}, seed=3, sites=["memory.read_weights"])
    req = seen[0]
    assert req.method == "POST" and req.url.path == "/api/checkpoints/abc/trace"
    assert json.loads(req.content) == {"seed": 3, "samples": 1, "sites": ["memory.read_weights"],
                                       "task": {"params": {"min_length": 4, "max_length": 4}}}


def test_trace_without_overrides_leaves_the_task_to_the_server():
    api, seen = client_with(lambda r: httpx.Response(200, json={}))
    api.trace("abc")
    assert "task" not in json.loads(seen[0].content)


def serve_kinds(request: httpx.Request) -> httpx.Response:
    """/api/kinds as the server lists it; a job everywhere else."""
    if request.url.path == "/api/kinds":
        return httpx.Response(200, json=KINDS)
    return httpx.Response(202, json={"id": "j1", "status": "queued"})


def test_jobs_go_to_the_routes_the_server_names_and_the_token_is_sent():
    api, seen = client_with(serve_kinds, token="s3cret")
    assert api.start_ablation("abc", {"specs": []})["id"] == "j1"
    api.start_patching("abc", {})
    api.start_gradients("abc", {})
    api.start_report("abc")
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/api/kinds"), ("POST", "/api/checkpoints/abc/ablations"), ("POST", "/api/checkpoints/abc/patching"),
        ("POST", "/api/checkpoints/abc/gradients"), ("POST", "/api/checkpoints/abc/report")]  # kinds asked once
    assert all(r.headers["Authorization"] == "Bearer s3cret" for r in seen)
    with pytest.raises(ApiError, match="does not offer 'train'"):
        api.start_job("abc", "train", {})


def test_a_route_the_server_moved_is_followed():
    moved = [dict(KINDS[0], route="/api/v2/checkpoints/{checkpoint_id}/ablate")]
    api, seen = client_with(lambda r: httpx.Response(200, json=moved) if r.url.path == "/api/kinds"
                            else httpx.Response(202, json={"id": "j2"}))
    api.start_job("a/b", "ablations", {})
    assert seen[-1].url.raw_path == b"/api/v2/checkpoints/a%2Fb/ablate"


def test_jobs_are_listed_with_filters():
    api, seen = client_with(lambda r: httpx.Response(200, json=[{"id": "j1"}]))
    assert api.jobs(checkpoint_id="abc", kind="report") == [{"id": "j1"}]
    assert seen[0].url.path == "/api/jobs" and dict(seen[0].url.params) == {"checkpoint_id": "abc", "kind": "report"}
    api.jobs()
    assert not seen[1].url.params


def test_ids_are_one_path_segment():
    api, seen = client_with(lambda r: httpx.Response(200, json={"id": "x"}))
    api.checkpoint("../jobs")
    assert seen[0].url.raw_path == b"/api/checkpoints/..%2Fjobs"
    with pytest.raises(ApiError, match="not a valid id"):
        api.job("..")


def test_sites_accepts_a_list_or_a_mapping():
    api, _ = client_with(lambda r: httpx.Response(200, json={"memory.read": {"kind": "read"}}))
    assert api.sites("abc") == [{"name": "memory.read", "kind": "read"}]
    api, _ = client_with(lambda r: httpx.Response(200, json=[{"name": "memory.read", "kind": "read"}]))
    assert api.sites("abc")[0]["name"] == "memory.read"


def test_delete_answers_none_on_204():
    api, seen = client_with(lambda r: httpx.Response(204))
    assert api.delete_checkpoint("abc") is None
    assert seen[0].method == "DELETE"


@pytest.mark.parametrize("status, body, expected", [
    (404, {"detail": "no checkpoint with id 'zz'"}, "no checkpoint with id 'zz' (HTTP 404)"),
    (422, {"detail": [{"loc": ["body", "seed"], "msg": "Input should be a valid integer"}]},
     "seed: Input should be a valid integer (HTTP 422)"),
    (413, None, "the file is larger than the server accepts (HTTP 413)"),
    (401, {}, "this server needs a token: enter it at the top of the page (HTTP 401)"),
])
def test_errors_read_as_sentences(status, body, expected):
    api, _ = client_with(lambda r: httpx.Response(status, json=body) if body is not None else httpx.Response(status))
    with pytest.raises(ApiError) as err:
        api.checkpoint("zz")
    assert str(err.value) == expected
    assert err.value.status == status


def test_a_server_that_is_down_is_named():
    api = ApiClient("http://127.0.0.1:9", timeout=2)  # discard port: nothing listens
    with pytest.raises(ApiError, match="cannot reach the mnemoscope API at http://127.0.0.1:9"):
        api.health()


def test_non_json_success_is_an_error():
    api, _ = client_with(lambda r: httpx.Response(200, text="<html>proxy login</html>"))
    with pytest.raises(ApiError, match="something other than JSON"):
        api.checkpoints()


def test_describe_error_falls_back_to_the_body_text():
    assert describe_error(500, None, "boom") == "boom (HTTP 500)"
    assert describe_error(418, {"detail": ""}, "") == "unexpected answer (HTTP 418)"
