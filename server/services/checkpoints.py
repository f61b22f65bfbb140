"""Checkpoint uploads: receive, validate with the safe loader, store content-addressed.

An upload that is an archive (`archives.archive_format`: a .zip, .tar or .tar.gz of a Hugging Face
save_pretrained folder) is converted in a sandbox process into one checkpoint file, stored under
that file's hash; the archive itself is not kept."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from mnemoscope.models.checkpoints import CheckpointError, load_checkpoint
from mnemoscope.models.files import format_from_name, sniff_format

from ..errors import Invalid, NotFound, UnsupportedMedia
from ..store import Store, now
from .archives import archive_format, archive_stem
from .serialize import to_jsonable
from .uploads import BATCH_BYTES, ReceivedFile, receive_upload, sanitize_name

ID_LENGTH = 16  # hex digits of the sha256: the id is the content's name


def checkpoint_id(sha256: str) -> str:
    return sha256[:ID_LENGTH]


def get_or_404(store: Store, checkpoint_id: str) -> dict:
    record = store.get_checkpoint(checkpoint_id)
    if record is None:
        raise NotFound(f"no checkpoint with id {checkpoint_id!r}; GET /api/checkpoints lists them")
    return record


def file_suffix(head: bytes, filename: str) -> tuple[str, str]:
    """(suffix the loader dispatches on, format name), from the content first and the
    client's file name only when the content says nothing (both loaders are safe)."""
    fmt = sniff_format(head) or format_from_name(filename) or "safetensors"
    return (".pt" if fmt == "torch" else ".safetensors"), fmt


def validate(path: Path, display: str) -> dict:
    """Load with the safe loader; every problem is a 422 naming the file and the fault."""
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as exc:
        raise Invalid(str(exc).replace(path.name, display)) from exc
    except Exception as exc:  # noqa: BLE001 - whatever a hostile file provokes, it is the file's fault
        raise Invalid(f"{display}: not a loadable checkpoint ({type(exc).__name__}: {exc})".replace(path.name, display)) from exc
    meta = loaded.meta
    extra = to_jsonable(meta.extra) if meta.extra else None
    if isinstance(extra, dict):  # importers record the file they read: that is our temp name, not the user's
        extra = {k: display if v == path.name else v for k, v in extra.items()}
    source = extra.get("imported_from") if isinstance(extra, dict) else None
    name = meta.name if meta.name not in (path.name, path.stem) else ""
    return {
        "arch": meta.arch,
        "config": to_jsonable(meta.config),
        "task": to_jsonable(meta.task or {}),
        "step": int(meta.step or 0),
        "metrics": to_jsonable(meta.metrics or {}),
        "extra": extra,
        "meta_name": name,
        "parameters": int(loaded.parameters),
        "sites": [s.to_dict() for s in loaded.model.site_specs().values()],
        "source": source if isinstance(source, str) else None,
    }


async def ingest(request: Request, store: Store, cap: int,
                 validate_file: Callable[[Path, str], dict] = validate,
                 convert_archive: Callable[..., dict] | None = None) -> tuple[dict, bool]:
    """Stream, validate and store one upload. Returns (record, created). Nothing stays in
    the store (not even a temp file) unless the checkpoint is valid. The server validates
    in a sandbox process (`validate_file`), never in its own, and converts archives there
    too (`convert_archive`, see uploads.sandboxed_archive_converter)."""
    received = await receive_upload(request, store.new_tmp_path(".part"), cap)
    staged = received.path
    try:
        fmt = archive_format(received.head, received.filename)
        if fmt is not None:
            if convert_archive is None:
                raise UnsupportedMedia(f"{received.filename}: a {fmt} archive; this endpoint takes checkpoint files")
            return await _ingest_archive(received, fmt, store, convert_archive)
        existing = store.get_checkpoint_by_sha(received.sha256)
        if existing is not None:
            return existing, False
        suffix, fmt = file_suffix(received.head, received.filename)
        # the loader reads the suffix; the name stays ours (a uuid), never the client's
        staged = received.path.with_suffix(suffix)
        os.replace(received.path, staged)
        info = await run_in_threadpool(validate_file, staged, received.filename)
        record = new_record(received.sha256, suffix, fmt, received.filename, received.size, info)
        return await run_in_threadpool(store.add_checkpoint, staged, record)
    finally:
        received.path.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)


async def _ingest_archive(received: ReceivedFile, fmt: str, store: Store,
                          convert_archive: Callable[..., dict]) -> tuple[dict, bool]:
    """Convert an uploaded archive into a checkpoint and store that. The same archive bytes
    uploaded again give the stored record (200) without converting again."""
    existing = _stored_from_archive(store, received.sha256)
    if existing is not None:
        return existing, False
    work_dir = store.new_tmp_path(".unpacked")  # the sandbox unpacks here and nowhere else
    out = store.new_tmp_path(".safetensors")
    try:
        work_dir.mkdir()
        info = await run_in_threadpool(convert_archive, received.path, fmt, work_dir, out, received.filename,
                                       received.sha256)
        sha256 = await run_in_threadpool(_file_sha256, out)
        existing = store.get_checkpoint_by_sha(sha256)
        if existing is not None:
            return existing, False
        filename = f"{sanitize_name(archive_stem(received.filename))}.safetensors"  # what the download holds
        record = new_record(sha256, ".safetensors", "safetensors", filename, out.stat().st_size, info)
        return await run_in_threadpool(store.add_checkpoint, out, record)
    finally:
        await run_in_threadpool(shutil.rmtree, work_dir, True)
        out.unlink(missing_ok=True)


def _stored_from_archive(store: Store, archive_sha256: str) -> dict | None:
    for record in store.list_checkpoints():
        archive = (record.get("extra") or {}).get("archive")
        if isinstance(archive, dict) and archive.get("sha256") == archive_sha256:
            return record
    return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(BATCH_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def new_record(sha256: str, suffix: str, fmt: str, filename: str, size_bytes: int, info: dict) -> dict:
    """The index row of a validated checkpoint file, however it arrived (an upload, a zoo
    file of `mnemoscope demo`): `info` is what `validate` returned for it. Its name is the
    one stored in the checkpoint, else the file's stem."""
    info = dict(info)
    return {
        "id": checkpoint_id(sha256),
        "sha256": sha256,
        "blob": f"{sha256}{suffix}",
        "name": sanitize_name(info.pop("meta_name"), fallback="") or _stem(filename),
        "filename": filename,
        "size_bytes": size_bytes,
        "format": fmt,
        "created_at": now(),
        **info,
    }


def _stem(filename: str) -> str:
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return stem or "checkpoint"


def public(record: dict) -> dict:
    """The record as the API shows it."""
    return {
        "id": record["id"],
        "name": record["name"],
        "filename": record["filename"],
        "file_name": record["filename"],  # the name the issue asked for; `filename` stays for old clients
        "arch": record["arch"],
        "config": record["config"],
        "task": record["task"],
        "step": record["step"],
        "metrics": record["metrics"],
        "parameters": record["parameters"],
        "sha256": record["sha256"],
        "size_bytes": record["size_bytes"],
        "format": record["format"],
        "source": record["source"],
        "created_at": record["created_at"],
        "verdict": record["verdict"],
        "reliance_score": record["reliance_score"],
        "report_job_id": record["report_job_id"],
    }
