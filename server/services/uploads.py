"""Receiving an upload: the multipart body is parsed as it streams in, the `file` part is
written to a temp file in the store and hashed on the way, and the size cap is enforced
while reading, so an oversized upload is cut off after `cap` bytes instead of filling
the disk first.

Parsing and writing run in a worker thread one ~1 MiB batch at a time, so hashing a
large file never stalls the event loop.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import Invalid, TooLarge, UnsupportedMedia
from ..sandbox import AnswerTooLarge, CallTimeout, OutOfMemory, Sandbox, WorkerDied
from ..settings import Settings
from .archives import HEAD_BYTES, ArchiveLimits

FIELD = "file"
BATCH_BYTES = 1 << 20
MULTIPART_SLACK = 1 << 20  # room for part headers and other small fields around the file
HOW_TO = f"send the checkpoint as multipart/form-data in a field named {FIELD!r}, e.g. curl -F {FIELD}=@model.safetensors"


@dataclass
class ReceivedFile:
    path: Path  # temp file inside the store's tmp/ directory
    filename: str  # sanitised client file name, for display only
    size: int
    sha256: str
    head: bytes  # the first HEAD_BYTES bytes, to tell safetensors, PyTorch files and archives apart


def sanitize_name(raw: str | None, fallback: str = "checkpoint", limit: int = 120) -> str:
    """A display name safe to show anywhere: no directories, no control characters, no
    leading dots, printable characters only. Never used as a path."""
    if not raw:
        return fallback
    name = unicodedata.normalize("NFKC", str(raw))
    name = re.split(r"[\\/]", name)[-1]  # basename under both / and \ conventions
    name = "".join(ch for ch in name if ch.isprintable() and ch not in "<>:\"|?*")
    name = re.sub(r"\s+", " ", name).strip().lstrip(".").strip()
    return name[:limit] or fallback


class _Sink:
    """Writes the one `file` part to disk; counts and hashes the bytes."""

    def __init__(self, path: Path, cap: int):
        self.path, self.cap = path, cap
        self.file = None
        self.size = 0
        self.hash = hashlib.sha256()
        self.head = b""
        self.filename: str | None = None
        self.parts_seen = 0
        self.body_bytes = 0
        # state of the part being parsed
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._writing = False

    # -- parser callbacks -------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}
        self._writing = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name", b"").decode("utf-8", "replace") != FIELD:
            return  # other fields are read past and dropped
        self.parts_seen += 1
        if self.parts_seen > 1:
            raise Invalid(f"send exactly one file in the {FIELD!r} field, not several")
        self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
        if any(sep in self.filename for sep in ("/", "\\", "\x00")):
            # browsers and curl send bare names; a path here is a traversal attempt or a broken client
            raise Invalid(f"the file name {sanitize_name(self.filename)!r} was sent with a directory part "
                          f"({self.filename[:80]!r}); send a bare file name")
        self.file = open(self.path, "xb")
        self._writing = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._writing:
            return
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.cap:
            raise TooLarge(f"the file is larger than this server's upload limit of {self.cap} bytes")
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self.hash.update(chunk)
        self.file.write(chunk)

    def on_part_end(self) -> None:
        self._writing = False

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
            "on_headers_finished", "on_part_data", "on_part_end")}

    # -- finishing ------------------------------------------------------------------------------
    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)


async def receive_upload(request: Request, tmp_path: Path, cap: int) -> ReceivedFile:
    """Stream the request's `file` part into `tmp_path`. Raises 413/415/422 service errors;
    on any failure the temp file is gone."""
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data":
        raise UnsupportedMedia(f"expected multipart/form-data, got {ctype.decode('latin-1') or 'no content type'}: {HOW_TO}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise Invalid(f"the multipart content type has no boundary: {HOW_TO}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + MULTIPART_SLACK:
        raise TooLarge(f"the upload ({declared} bytes) is larger than this server's upload limit of {cap} bytes")

    sink = _Sink(tmp_path, cap)
    parser = MultipartParser(boundary, sink.callbacks())

    def feed(data: bytes) -> None:
        sink.body_bytes += len(data)
        if sink.body_bytes > cap + MULTIPART_SLACK:
            raise TooLarge(f"the upload is larger than this server's upload limit of {cap} bytes")
        parser.write(data)

    try:
        batch = bytearray()
        async for chunk in request.stream():
            batch += chunk
            if len(batch) >= BATCH_BYTES:
                await run_in_threadpool(feed, bytes(batch))
                batch.clear()
        if batch:
            await run_in_threadpool(feed, bytes(batch))
        parser.finalize()
        if parser.state not in (MultipartState.END, MultipartState.END_BOUNDARY):
            raise Invalid(f"the multipart body ended before its closing boundary (upload cut short?): {HOW_TO}")
        if sink.file is None:
            raise Invalid(f"the multipart body has no {FIELD!r} field: {HOW_TO}")
        await run_in_threadpool(sink.finish)
    except MultipartParseError as exc:
        sink.discard()
        raise Invalid(f"malformed multipart body ({exc}): {HOW_TO}") from exc
    except BaseException:  # incl. ClientDisconnect and cancellation: never leave a half file
        sink.discard()
        raise
    return ReceivedFile(tmp_path, sanitize_name(sink.filename), sink.size, sink.hash.hexdigest(), sink.head)


# -- validating in a sandbox -------------------------------------------------------------------

VALIDATION_ANSWER_BYTES = 16 << 20  # a checkpoint's description: its config, task, metrics and sites


def sandboxed_validator(sandbox: Sandbox, timeout_s: float, memory_mb: int) -> Callable[[Path, str], dict]:
    """`validate(path, display) -> info` run by a sandbox process: a hostile file (a config
    that builds a huge model, tensors claiming gigabytes) costs that process, under its
    memory limit, never the server."""
    return partial(_validate_in_sandbox, sandbox, timeout_s, memory_mb)


def _validate_in_sandbox(sandbox: Sandbox, timeout_s: float, memory_mb: int, path: Path, display: str) -> dict:
    return _call(sandbox, "validate", timeout_s, memory_mb, {"path": str(path), "display": display})


def sandboxed_archive_converter(sandbox: Sandbox, settings: Settings) -> Callable[..., dict]:
    """`convert(archive, fmt, work_dir, out, display, sha256) -> info`: a sandbox process unpacks the
    archive into `work_dir` (under the archive limits), imports the Hugging Face folder in it and writes
    the checkpoint to `out`, then validates it (services/hf_archive.py)."""
    return partial(_convert_in_sandbox, sandbox, settings.upload_timeout_s, settings.worker_memory_mb,
                   ArchiveLimits.from_settings(settings), settings.upload_max_layers)


def _convert_in_sandbox(sandbox: Sandbox, timeout_s: float, memory_mb: int, limits: ArchiveLimits, max_layers: int,
                        archive: Path, fmt: str, work_dir: Path, out: Path, display: str, sha256: str) -> dict:
    return _call(sandbox, "import_archive", timeout_s, memory_mb, {
        "archive": str(archive), "fmt": fmt, "work_dir": str(work_dir), "out": str(out), "display": display,
        "sha256": sha256, "limits": limits.as_dict(), "memory_mb": memory_mb, "max_layers": max_layers})


def _call(sandbox: Sandbox, op: str, timeout_s: float, memory_mb: int, arguments: dict) -> dict:
    """One sandbox call on an uploaded file (`arguments["display"]`: its name); its failures as 422s naming it."""
    display = arguments["display"]
    try:
        answer = sandbox.call(op, timeout_s=timeout_s, max_bytes=VALIDATION_ANSWER_BYTES, **arguments)
    except OutOfMemory as exc:
        raise Invalid(f"{display}: loading this checkpoint needs more memory than this server gives one file "
                      f"(worker_memory_mb = {memory_mb}); its config or tensors are larger than it can hold") from exc
    except CallTimeout as exc:
        raise Invalid(f"{display}: validating the file took longer than this server allows "
                      f"(upload_timeout_s = {exc.seconds:g})") from exc
    except AnswerTooLarge as exc:
        raise Invalid(f"{display}: the checkpoint's description ({exc.size} bytes) is larger than this server "
                      "accepts") from exc
    except WorkerDied as exc:  # the loader crashed on this file
        raise Invalid(f"{display}: not a loadable checkpoint (the process reading it failed: {exc})") from exc
    return json.loads(answer)
