"""GET /api/checkpoints/{id}/file racing a DELETE: a 404 or the whole file, never a 500."""
from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Route

from mnemoscope.server.responses import OpenedFileResponse
from mnemoscope.server.routers import checkpoints as routes


def test_file_deleted_between_lookup_and_open_is_404(client, uploaded, app, monkeypatch):
    store = app.state.store
    lookup = routes.service.get_or_404

    def lookup_then_lose_the_file(store_, checkpoint_id):
        record = lookup(store_, checkpoint_id)
        store.checkpoint_path(record).unlink()  # what a DELETE finishing right now does to the blob
        return record

    monkeypatch.setattr(routes.service, "get_or_404", lookup_then_lose_the_file)
    r = client.get(f"/api/checkpoints/{uploaded['id']}/file")
    assert r.status_code == 404, r.text
    assert uploaded["id"] in r.json()["detail"]


def test_file_deleted_after_delete_is_404(client, uploaded):
    assert client.delete(f"/api/checkpoints/{uploaded['id']}").status_code == 204
    assert client.get(f"/api/checkpoints/{uploaded['id']}/file").status_code == 404


def _app_losing_the_file_after_open(path: Path) -> Starlette:
    def download(request):
        response = OpenedFileResponse(open(path, "rb"), media_type="application/octet-stream", filename="m.bin")
        path.unlink()  # deleted after the route opened it, before a byte is sent
        return response

    return Starlette(routes=[Route("/file", download)])


def test_file_deleted_after_open_is_still_sent_whole(tmp_path):
    data = bytes(range(256)) * 1000  # several chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    with TestClient(_app_losing_the_file_after_open(path)) as client:
        r = client.get("/file")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data)) and 'filename="m.bin"' in r.headers["content-disposition"]
    assert not path.exists()


def test_ranges_are_served_from_the_open_file(tmp_path):
    data = bytes(range(256)) * 1000
    path = tmp_path / "blob"
    for header, status, expected in (("bytes=10-19", 206, data[10:20]), ("bytes=-5", 206, data[-5:])):
        path.write_bytes(data)
        with TestClient(_app_losing_the_file_after_open(path)) as client:
            r = client.get("/file", headers={"Range": header})
        assert r.status_code == status and r.content == expected
    path.write_bytes(data)
    with TestClient(_app_losing_the_file_after_open(path)) as client:
        r = client.get("/file", headers={"Range": "bytes=0-1,100-101"})
    assert r.status_code == 206 and data[0:2] in r.content and data[100:102] in r.content
