"""Streaming multipart upload: the cap is enforced while reading, names are sanitised."""
from __future__ import annotations

import asyncio
import hashlib

import pytest
from starlette.requests import Request

from mnemoscope.server.errors import Invalid, TooLarge
from mnemoscope.server.services.archives import HEAD_BYTES
from mnemoscope.server.services.uploads import BATCH_BYTES, MULTIPART_SLACK, receive_upload, sanitize_name

BOUNDARY = b"----mnemoscope-test"


def run_async(coro):
    """asyncio.run in a thread of its own: a browser test's Playwright loop may still be
    running in the main thread when this file runs, and asyncio.run refuses to nest."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _head(name: bytes = b"file", filename: bytes = b"m.safetensors") -> bytes:
    return (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + name + b"\"; filename=\""
            + filename + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n")


TAIL = b"\r\n--" + BOUNDARY + b"--\r\n"


class _Body:
    """An ASGI receive() handing out the body in chunks, counting what was read."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.sent = 0

    async def __call__(self):
        chunk = next(self.chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}


def _request(body: _Body, headers: dict | None = None) -> Request:
    hdrs = {"content-type": "multipart/form-data; boundary=" + BOUNDARY.decode(), **(headers or {})}
    scope = {"type": "http", "method": "POST", "path": "/api/checkpoints", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()]}
    return Request(scope, body)


def _receive(chunks, tmp_path, cap, headers=None):
    body = _Body(chunks)
    return run_async(receive_upload(_request(body, headers), tmp_path / "upload.part", cap)), body


def test_receives_and_hashes(tmp_path):
    data = bytes(range(256)) * 1000
    got, _ = _receive([_head(), data[:1000], data[1000:], TAIL], tmp_path, cap=len(data))
    assert got.size == len(data) and got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.path.read_bytes() == data and got.filename == "m.safetensors" and got.head == data[:HEAD_BYTES]


def test_the_cap_stops_reading_early(tmp_path):
    cap = 64 * 1024
    chunk = b"\0" * 65536

    def endless():
        yield _head()
        for _ in range(10_000):  # 640 MB if it were all read
            yield chunk

    body = _Body(endless())
    with pytest.raises(TooLarge):
        run_async(receive_upload(_request(body), tmp_path / "u.part", cap))
    assert body.sent <= cap + BATCH_BYTES + MULTIPART_SLACK + 2 * len(chunk)
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


def test_declared_length_over_the_cap_is_refused_before_reading(tmp_path):
    body = _Body([_head(), b"x" * 10, TAIL])
    with pytest.raises(TooLarge):
        run_async(receive_upload(_request(body, {"content-length": str(10**12)}), tmp_path / "u.part", 1024))
    assert body.sent == 0


@pytest.mark.parametrize("chunks, fragment", [
    ([_head(name=b"weights"), b"abc", TAIL], "no 'file' field"),
    ([_head(), b"abc\r\n--" + BOUNDARY + b"\r\n" + _head()[len(b"--" + BOUNDARY + b"\r\n"):], b"def", TAIL],
     "exactly one file"),
    ([_head(), b"abc"], "closing boundary"),  # connection closed mid-file
    ([_head(filename=b"../../x.safetensors"), b"abc", TAIL], "directory part"),
    ([b"garbage without boundary"], "malformed multipart"),
])
def test_bad_bodies(tmp_path, chunks, fragment):
    with pytest.raises(Invalid, match=fragment):
        _receive(chunks, tmp_path, cap=1 << 20)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raw, clean", [
    ("model.safetensors", "model.safetensors"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\ntm.pt", "ntm.pt"),
    ("..hidden", "hidden"),
    ("a\x00b\nc\td.pt", "abcd.pt"),
    ("", "checkpoint"),
    ("/", "checkpoint"),
    ("x" * 500 + ".pt", "x" * 120),
    ("név <script>.pt", "név script.pt"),
])
def test_sanitize_name(raw, clean):
    assert sanitize_name(raw) == clean


def test_client_disconnect_leaves_nothing(tmp_path):
    from starlette.requests import ClientDisconnect

    sent = iter([{"type": "http.request", "body": _head() + b"x" * (BATCH_BYTES + 10), "more_body": True},
                 {"type": "http.disconnect"}])

    async def receive():
        return next(sent)

    with pytest.raises(ClientDisconnect):
        run_async(receive_upload(_request(receive), tmp_path / "u.part", 4 << 20))  # file begun, then gone
    assert list(tmp_path.iterdir()) == []
