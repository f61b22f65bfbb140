"""No cross-site writes and no DNS rebinding: a web page in the user's browser can send
requests to a server on their machine, so the server checks who is asking.

Clients here talk to http://127.0.0.1:8000 (the Host a browser would send for a local
server); the app runs without a token, the case where nothing else stops a write."""
from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from mnemoscope.server.app import create_app
from mnemoscope.server.settings import Settings

OWN = "http://127.0.0.1:8000"
EVIL = "http://evil.example"
MUTATING = ("post", "put", "patch", "delete")
ANY_ID = "0123456789abcdef"


def mutating_routes(app) -> list[tuple[str, str]]:
    """(METHOD, path) of every mutating route the app documents, path parameters filled in:
    a route added later is covered without editing this test."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method in MUTATING:
                routes.append((method.upper(), path.replace("{checkpoint_id}", ANY_ID).replace("{job_id}", ANY_ID)))
    return routes


@pytest.fixture
def local(settings):
    app = create_app(settings)
    with TestClient(app, base_url=OWN) as client:
        yield client


def make_client(settings: Settings, **changes) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)), base_url=OWN)


def test_every_mutating_route_is_found(app):
    routes = mutating_routes(app)
    assert ("POST", "/api/checkpoints") in routes and ("DELETE", f"/api/checkpoints/{ANY_ID}") in routes
    assert ("POST", f"/api/checkpoints/{ANY_ID}/trace") in routes and len(routes) >= 6


@pytest.mark.parametrize("body, content_type", [
    (b"anything", "text/plain"),  # fetch(url, {method: "POST", mode: "no-cors", body: "..."})
    (b"a=1&b=2", "application/x-www-form-urlencoded"),  # a <form method=post>
])
def test_cross_site_writes_are_refused_on_every_mutating_route(local, app, body, content_type):
    for method, path in mutating_routes(app):
        r = local.request(method, path, content=body, headers={"Origin": EVIL, "Content-Type": content_type})
        assert r.status_code == 403, (method, path, r.text)
        assert "cross-site" in r.json()["detail"] and EVIL in r.json()["detail"]


def test_same_origin_and_originless_requests_work(local, app, checkpoint_bytes):
    for headers in ({"Origin": OWN}, {}):
        for method, path in mutating_routes(app):
            r = local.request(method, path, content=b"x", headers={**headers, "Content-Type": "text/plain"})
            assert r.status_code != 403, (headers, method, path, r.text)
    r = local.post("/api/checkpoints", files={"file": ("tiny.safetensors", io.BytesIO(checkpoint_bytes))},
                   headers={"Origin": OWN})
    assert r.status_code == 201, r.text
    assert local.delete(f"/api/checkpoints/{r.json()['id']}", headers={"Origin": OWN}).status_code == 204


def test_cross_site_upload_and_delete_change_nothing(local, checkpoint_bytes):
    r = local.post("/api/checkpoints", files={"file": ("tiny.safetensors", io.BytesIO(checkpoint_bytes))},
                   headers={"Origin": EVIL})
    assert r.status_code == 403 and local.get("/api/checkpoints").json() == []
    cid = local.post("/api/checkpoints", files={"file": ("tiny.safetensors", io.BytesIO(checkpoint_bytes))}).json()["id"]
    assert local.delete(f"/api/checkpoints/{cid}", headers={"Origin": EVIL}).status_code == 403
    assert local.get(f"/api/checkpoints/{cid}").status_code == 200


@pytest.mark.parametrize("origin", [
    "null",  # sandboxed frames and file: pages
    "http://127.0.0.1:9000",  # another local service's page
    "http://127.0.0.1",  # port 80, not 8000
    "http://evil.example:8000",
    "not a url",
])
def test_other_origins_are_refused(local, origin):
    r = local.post(f"/api/checkpoints/{ANY_ID}/trace", json={}, headers={"Origin": origin})
    assert r.status_code == 403, (origin, r.text)


def test_reads_from_other_origins_still_answer(local):
    """A page cannot read a cross-origin answer without CORS; GETs are left alone."""
    assert local.get("/api/health", headers={"Origin": EVIL}).status_code == 200


def test_listed_cors_origin_may_write(settings):
    with make_client(settings, cors_origins=["https://lab.example"]) as client:
        r = client.post(f"/api/checkpoints/{ANY_ID}/trace", json={}, headers={"Origin": "https://lab.example:443"})
        assert r.status_code == 404, r.text  # through the guard, to the route
        assert client.post(f"/api/checkpoints/{ANY_ID}/trace", json={}, headers={"Origin": EVIL}).status_code == 403


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "127.0.0.1", "localhost:8000", "LOCALHOST", "[::1]:8000", "[::1]"])
def test_loopback_host_names_are_answered(local, host):
    assert local.get("/api/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::1", "a:b:c", ""])
def test_other_host_names_are_refused(local, host):
    """DNS rebinding: evil.example now resolves to 127.0.0.1, but the browser still says its name."""
    for method, path in (("GET", "/api/health"), ("GET", "/api/checkpoints"), ("POST", f"/api/checkpoints/{ANY_ID}/trace")):
        r = local.request(method, path, headers={"Host": host})
        assert r.status_code == 403, (host, method, r.text)
        assert "MNEMOSCOPE_ALLOWED_HOSTS" in r.json()["detail"]


def test_allowed_hosts_and_bind_host_are_answered(settings):
    with make_client(settings, allowed_hosts=["lab.example", "10.0.0.7:8000"]) as client:
        for host in ("lab.example", "lab.example:8000", "10.0.0.7:8000"):
            assert client.get("/api/health", headers={"Host": host}).status_code == 200, host
        assert client.get("/api/health", headers={"Host": "other.example"}).status_code == 403
    with make_client(settings, host="192.168.1.5", allow_remote=True) as client:
        assert client.get("/api/health", headers={"Host": "192.168.1.5:8000"}).status_code == 200
        assert client.get("/api/health", headers={"Host": "192.168.1.6:8000"}).status_code == 403
    with make_client(settings, allowed_hosts=["*"]) as client:
        assert client.get("/api/health", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("value, expected", [
    ('["a.example", "b.example:8000"]', ["a.example", "b.example:8000"]),
    ("a.example, b.example", ["a.example", "b.example"]),
    ("", []),
])
def test_allowed_hosts_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("MNEMOSCOPE_ALLOWED_HOSTS", value)
    assert Settings().allowed_hosts == expected


def test_allowed_hosts_default_is_empty(monkeypatch):
    monkeypatch.delenv("MNEMOSCOPE_ALLOWED_HOSTS", raising=False)
    assert Settings().allowed_hosts == []
