"""Unpacking an uploaded `.zip`, `.tar` or `.tar.gz` safely into a fresh folder.

Every member is checked before a byte is written, and sizes are counted again while writing
(headers can lie):

- names: relative, `/`-separated, no `..`, no backslashes, drive letters, control characters
  or NULs, not too deep or long, no duplicates, no file standing where another member needs a
  folder;
- types: regular files and folders only; symlinks, hard links, devices, fifos, sparse files
  and encrypted zip members are refused;
- counts and sizes: at most `members` members, each at most `member_bytes` and all together at
  most `total_bytes` unpacked, and at most `ratio` times the archive's own size (a bomb that
  packs gigabytes of zeros into kilobytes is refused from its headers).

Files are created with O_EXCL | O_NOFOLLOW inside `dest`, which the caller makes empty; as no
link is ever created, no path can lead outside it. A refusal is a ServiceError (413 for a limit,
422 for a name, a type or a broken archive) naming the archive, the member and the limit; the
caller removes `dest` whatever happens.

Which file is an archive is told in the API process from the first bytes and the file name
alone (`archive_format`): the bytes themselves are opened only in a sandbox process.
"""
from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from mnemoscope.models.files import sniff_format

from ..errors import Invalid, TooLarge

HEAD_BYTES = 512  # the first bytes an upload keeps for telling formats apart: tar's magic sits at 257
ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
TAR_MAGIC_OFFSET = 257  # "ustar" (POSIX and GNU tar headers)
ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar",)
TAR_GZ_SUFFIXES = (".tar.gz", ".tgz")
MAX_DEPTH = 16  # folders inside folders; a save_pretrained directory has none
MAX_NAME = 255  # characters in one path component (the usual file system limit)
RATIO_FLOOR = 1 << 20  # below this many unpacked bytes the compression ratio is not held against a file
CHUNK = 1 << 20


def archive_format(head: bytes, filename: str) -> str | None:
    """"zip", "tar" or "tar.gz" when an upload is an archive, from its magic bytes and name; else None.

    gzip and tar are told by their bytes alone. A zip is an archive only when its name says so:
    PyTorch's own checkpoints are zips too (`.pt`), and they go to the checkpoint loader. safetensors
    bytes are never an archive, whatever their header's length happens to begin with (0x8b1f...)."""
    if sniff_format(head) == "safetensors":
        return None
    name = filename.lower()
    if head[:2] == GZIP_MAGIC:
        return "tar.gz"
    if head[TAR_MAGIC_OFFSET:TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    if head[:4] == ZIP_MAGIC and name.endswith(ZIP_SUFFIXES):
        return "zip"
    return None


def archive_stem(filename: str) -> str:
    """The file name without its archive suffix: `mamba-tiny.tar.gz` -> `mamba-tiny`."""
    lower = filename.lower()
    for suffix in (*TAR_GZ_SUFFIXES, *TAR_SUFFIXES, *ZIP_SUFFIXES):
        if lower.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return filename


@dataclass(frozen=True)
class ArchiveLimits:
    members: int
    member_bytes: int
    total_bytes: int
    ratio: float

    @classmethod
    def from_settings(cls, settings) -> "ArchiveLimits":
        return cls(members=settings.archive_max_members, member_bytes=settings.archive_max_member_bytes,
                   total_bytes=settings.archive_max_unpacked_bytes, ratio=settings.archive_max_ratio)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Member:
    """One checked member: where it goes (path parts under dest), and what it claims."""

    name: str  # as written in the archive, for messages
    parts: tuple[str, ...]
    is_dir: bool
    size: int  # declared unpacked size (0 for a folder)
    source: object  # the ZipInfo or TarInfo


# -- checks on the headers ---------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def member_parts(archive: str, name: str) -> tuple[str, ...]:
    """The path components of a member name, or a 422 saying what is wrong with it."""
    shown = repr(name[:200])

    def refuse(why: str) -> Invalid:
        return Invalid(f"{archive}: member {shown} {why}; nothing was unpacked")

    if not name:
        raise refuse("has an empty name")
    if any(not ch.isprintable() for ch in name):
        raise refuse("has a control character in its name")
    if "\\" in name:
        raise refuse("has a backslash in its name (a Windows path separator that could lead elsewhere)")
    if name.startswith("/") or _DRIVE.match(name):
        raise refuse("has an absolute path; members must be relative to the archive's root")
    raw = name.split("/")
    if ".." in raw:
        raise refuse("has '..' in its path and would land outside the upload's folder")
    parts = tuple(p for p in raw if p not in ("", "."))
    if len(parts) > MAX_DEPTH:
        raise refuse(f"lies {len(parts)} folders deep (at most {MAX_DEPTH})")
    if any(len(p) > MAX_NAME for p in parts):
        raise refuse(f"has a path component longer than {MAX_NAME} characters")
    return parts


def check_members(archive: str, members: Iterator[Member], limits: ArchiveLimits, archive_bytes: int) -> list[Member]:
    """Every member checked against the limits and each other, stopping at the first problem (so a
    header claiming gigabytes, or the ten-thousandth member, is refused before the rest is read)."""
    checked: list[Member] = []
    files: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    total = 0
    ratio_cap = max(int(limits.ratio * archive_bytes), RATIO_FLOOR)
    for member in members:
        if len(checked) >= limits.members:
            raise TooLarge(f"{archive}: more than {limits.members} members (archive_max_members); "
                           "a save_pretrained folder holds a handful of files. Nothing was unpacked")
        if not member.parts:
            continue  # the archive's root folder itself ("./")
        shown = repr(member.name[:200])
        if member.size > limits.member_bytes:
            raise TooLarge(f"{archive}: member {shown} claims {member.size} bytes, more than this server unpacks "
                           f"for one file ({limits.member_bytes} bytes, archive_max_member_bytes). Nothing was unpacked")
        total += member.size
        if total > limits.total_bytes:
            raise TooLarge(f"{archive}: its members claim more than {limits.total_bytes} bytes unpacked "
                           f"(archive_max_unpacked_bytes), reached at member {shown}. Nothing was unpacked")
        if total > ratio_cap:
            raise TooLarge(f"{archive}: its members claim {total} bytes unpacked from {archive_bytes} bytes, more "
                           f"than {limits.ratio:g} times the archive (archive_max_ratio): a compression bomb? "
                           "Nothing was unpacked")
        parents = {member.parts[:i] for i in range(1, len(member.parts))}
        if member.is_dir:
            if member.parts in files:
                raise Invalid(f"{archive}: member {shown} is a folder where another member is a file")
            folders.add(member.parts)
        else:
            if member.parts in files:
                raise Invalid(f"{archive}: member {shown} appears twice; nothing was unpacked")
            if member.parts in folders:
                raise Invalid(f"{archive}: member {shown} is a file where another member is a folder")
            files.add(member.parts)
        clash = parents & files
        if clash:
            raise Invalid(f"{archive}: member {shown} lies inside {'/'.join(min(clash))!r}, which is a file")
        folders |= parents
        checked.append(member)
    return checked


# -- reading each format ------------------------------------------------------------------------------

def _zip_members(archive: str, zf: zipfile.ZipFile, ratio: float) -> Iterator[Member]:
    for info in zf.infolist():
        shown = repr(info.filename[:200])
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if info.create_system == 3 and kind == stat.S_IFLNK:  # unix attributes
            raise Invalid(f"{archive}: member {shown} is a symbolic link; only files and folders are unpacked")
        if info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise Invalid(f"{archive}: member {shown} is not a regular file or folder (mode {oct(mode)})")
        if info.flag_bits & 0x1:
            raise Invalid(f"{archive}: member {shown} is encrypted")
        is_dir = info.is_dir()
        if not is_dir and info.file_size > RATIO_FLOOR and info.file_size > ratio * max(info.compress_size, 1):
            raise TooLarge(f"{archive}: member {shown} claims {info.file_size} bytes from {info.compress_size} "
                           "compressed, more than this server's compression-ratio limit (archive_max_ratio): "
                           "a compression bomb? Nothing was unpacked")
        yield Member(info.filename, member_parts(archive, info.filename), is_dir, 0 if is_dir else info.file_size, info)


def _tar_members(archive: str, tf: tarfile.TarFile) -> Iterator[Member]:
    for info in tf:  # lazily: a refusal stops the reading of headers (and of a gzip stream) there
        shown = repr(info.name[:200])
        if info.issym() or info.islnk():
            link = "symbolic link" if info.issym() else "hard link"
            raise Invalid(f"{archive}: member {shown} is a {link} (to {info.linkname[:200]!r}); only files and "
                          "folders are unpacked. Nothing was unpacked")
        if info.issparse() or not (info.isreg() or info.isdir()):
            raise Invalid(f"{archive}: member {shown} is not a regular file or folder (a device, fifo or "
                          "sparse file); nothing was unpacked")
        yield Member(info.name, member_parts(archive, info.name), info.isdir(), 0 if info.isdir() else info.size, info)


# -- writing -------------------------------------------------------------------------------------------

def _write(archive: str, member: Member, source: BinaryIO, dest: Path, limits: ArchiveLimits, written_so_far: int,
           ratio_cap: int) -> int:
    """Copy one member to dest, counting the bytes really produced; returns how many."""
    target = dest.joinpath(*member.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > member.size:
                raise TooLarge(f"{archive}: member {member.name[:200]!r} holds more bytes than its header "
                               f"declares ({member.size}); the upload is refused")
            if written_so_far + size > min(limits.total_bytes, ratio_cap):
                raise TooLarge(f"{archive}: unpacking passed this server's limit of "
                               f"{min(limits.total_bytes, ratio_cap)} bytes; the upload is refused")
            out.write(chunk)
    if size != member.size:
        raise Invalid(f"{archive}: member {member.name[:200]!r} holds {size} bytes, its header declares "
                      f"{member.size}; the archive is corrupt")
    return size


def extract(path: Path, fmt: str, dest: Path, limits: ArchiveLimits, display: str) -> list[str]:
    """Unpack archive `path` (format `fmt`, from `archive_format`) into the empty folder `dest`, after
    checking every member; the names unpacked. Refusals are ServiceErrors naming `display`."""
    archive_bytes = path.stat().st_size
    ratio_cap = max(int(limits.ratio * archive_bytes), RATIO_FLOOR)
    written = 0
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                members = check_members(display, _zip_members(display, zf, limits.ratio), limits, archive_bytes)
                for member in members:
                    if member.is_dir:
                        dest.joinpath(*member.parts).mkdir(parents=True, exist_ok=True)
                        continue
                    with zf.open(member.source) as source:
                        written += _write(display, member, source, dest, limits, written, ratio_cap)
        elif fmt in ("tar", "tar.gz"):
            with tarfile.open(path, mode="r:gz" if fmt == "tar.gz" else "r:") as tf:
                members = check_members(display, _tar_members(display, tf), limits, archive_bytes)
                for member in members:
                    if member.is_dir:
                        dest.joinpath(*member.parts).mkdir(parents=True, exist_ok=True)
                        continue
                    source = tf.extractfile(member.source)
                    with source:
                        written += _write(display, member, source, dest, limits, written, ratio_cap)
        else:
            raise ValueError(f"unknown archive format {fmt!r}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
            NotImplementedError) as exc:
        raise Invalid(f"{display}: not a readable {fmt} archive ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:  # gzip's BadGzipFile, a truncated stream
        raise Invalid(f"{display}: not a readable {fmt} archive ({exc})") from exc
    return ["/".join(m.parts) for m in members]


def model_folder(dest: Path, marker: str = "config.json") -> Path:
    """The folder holding `marker`: the archive's root, or its one top folder (macOS's `__MACOSX` and
    hidden entries aside). None of the two: ValueError listing what the archive holds."""
    if (dest / marker).is_file():
        return dest
    top = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(top) == 1 and top[0].is_dir() and (top[0] / marker).is_file():
        return top[0]
    found = sorted(str(PurePosixPath(p.relative_to(dest))) for p in dest.rglob("*"))[:12]
    raise ValueError(f"no {marker} at the archive's root or in its one top folder (it holds {found}); "
                     "archive the save_pretrained folder itself")
