"""Files on disk: durable atomic writes, and telling checkpoint formats apart.

    write_atomic(path, data)                 # bytes, or a function that writes to the open file
    sniff_format(path_or_head)               # "safetensors", "torch" or None, from the leading bytes
    format_from_name("model.pth")            # "torch", from the suffix alone
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Literal, Union

Format = Literal["safetensors", "torch"]
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".model")
SNIFF_BYTES = 9  # safetensors: an 8-byte header length, then the header's "{"

Writer = Callable[[BinaryIO], object]


def write_atomic(path: str | os.PathLike, data: Union[bytes, Writer]) -> Path:
    """Write `data` (bytes, or a function that writes to the open binary file) to `path`
    so readers see the old file or the whole new one, and the new one survives a crash:
    a temp file in the same directory, fsynced, renamed over `path`, then the directory
    fsynced. On any failure the temp file is removed and `path` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename in `directory` durable (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sniff_format(path_or_head: str | os.PathLike | bytes) -> Format | None:
    """The checkpoint format the leading bytes show (a file's, or bytes already read; at
    least SNIFF_BYTES of them), or None when they show neither."""
    if isinstance(path_or_head, (bytes, bytearray)):
        head = bytes(path_or_head[:SNIFF_BYTES])
    else:
        with open(path_or_head, "rb") as f:
            head = f.read(SNIFF_BYTES)
    # safetensors first: its 8-byte header length can begin with 0x80, like a pickle
    if head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"  # zip (torch >= 1.6) or a legacy pickle stream
    return None


def format_from_name(name: str | os.PathLike) -> Format | None:
    """The checkpoint format a file name's suffix claims, or None for another suffix."""
    suffix = Path(name).suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    return None


__all__ = ["Format", "SAFETENSORS_SUFFIXES", "TORCH_SUFFIXES", "SNIFF_BYTES", "write_atomic", "fsync_dir",
           "sniff_format", "format_from_name"]
