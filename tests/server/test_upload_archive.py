"""Hugging Face save_pretrained folders uploaded as .zip and .tar.gz through the real app (its sandbox
processes are real): every supported model type becomes a stored checkpoint whose forward equals
transformers' within 1e-5; and bad archives (traversal names, links, sizes that lie or explode, too many
members, pickled weights, an unknown model_type, remote code, a config too big to build) each get a 4xx
naming the problem, unpack nothing outside the upload's temporary folder and run no code."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.hf import SUPPORTED_MODEL_TYPES
from mnemoscope.server.app import create_app
from mnemoscope.server.services.archives import archive_format
from mnemoscope.server.settings import Settings

# The tiny configs, the saving and the reference forward of tests/models/test_hf.py, read from there
_spec = importlib.util.spec_from_file_location("hf_tiny_models", Path(__file__).parents[1] / "models" / "test_hf.py")
hf_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hf_tiny)

T = hf_tiny.T
MEMBER_LIMIT = 200  # archive_max_members here; "thousands of members" is well past it
MiB = 1 << 20


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The server's whole world: nothing may appear here but the store's own files."""
    return tmp_path_factory.mktemp("archive-server")


@pytest.fixture(scope="module")
def client(root):
    settings = Settings(
        data_dir=root / "data", workers=1, dashboard=False, worker_nice=0, auto_analyze=False,
        max_upload_bytes=8 * MiB, trace_workers=1, worker_recycle_mb=4096,  # keep transformers imported
        archive_max_members=MEMBER_LIMIT,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def upload(client, data: bytes, filename: str):
    return client.post("/api/checkpoints", files={"file": (filename, io.BytesIO(data))})


def every_file(root: Path) -> set[str]:
    """Every path under root but SQLite's (whose journal comes and goes)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("index.sqlite3")}


# -- archives in memory (the files under `root` must stay the store's alone) -----------------------

def zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(entries: list[tuple[str | tarfile.TarInfo, bytes]], gz: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tf:
        for entry, data in entries:
            info = entry if isinstance(entry, tarfile.TarInfo) else tarfile.TarInfo(entry)
            if info.isreg():
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def folder_entries(folder: Path, prefix: str = "") -> list[tuple[str, bytes]]:
    return [(prefix + p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]


# -- every supported model type, as .zip and .tar.gz ---------------------------------------------

@pytest.fixture(scope="module", params=SUPPORTED_MODEL_TYPES)
def saved(request, tmp_path_factory):
    """(model_type, its save_pretrained folder, input ids, transformers' logits): built once per module."""
    model_type = request.param
    folder = hf_tiny.save_tiny(model_type, tmp_path_factory.mktemp(model_type) / f"tiny-{model_type}")
    ids = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(1))
    return model_type, folder, ids, hf_tiny.reference_logits(folder, ids)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_archive_upload_stores_a_checkpoint_equal_to_transformers(client, root, saved, fmt):
    model_type, folder, ids, ref = saved
    if fmt == "zip":  # the folder itself archived, as `zip -r tiny.zip tiny/` does (its entry first)
        entries = [(f"{folder.name}/", b""), *folder_entries(folder, prefix=f"{folder.name}/")]
        data, name = zip_bytes(entries), f"{folder.name}.zip"
    else:  # the files at the archive's root, as `tar czf tiny.tar.gz -C tiny .` does
        data, name = tar_bytes([(directory("."), b""), *folder_entries(folder, prefix="./")]), f"{folder.name}.tar.gz"
    response = upload(client, data, name)
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["arch"] == ("mamba" if model_type == "mamba" else "hf")  # Mamba-1 as the native arch
    assert record["source"] == "hf" and record["format"] == "safetensors"
    assert record["filename"] == f"{folder.name}.safetensors" and record["name"] == folder.name

    stored = client.get(f"/api/checkpoints/{record['id']}/file")
    assert stored.status_code == 200
    assert hashlib.sha256(stored.content).hexdigest() == record["sha256"]  # the id is the converted file's hash
    assert record["id"] == record["sha256"][:16]
    path = root / f"stored-{model_type}-{fmt.replace('.', '-')}.safetensors"
    path.write_bytes(stored.content)
    try:
        loaded = load_checkpoint(path)
    finally:
        path.unlink()
    assert loaded.meta.extra["archive"] == {"name": name, "format": fmt,
                                           "sha256": hashlib.sha256(data).hexdigest()}
    assert loaded.meta.extra["model_type"] == model_type
    with torch.no_grad():
        assert (loaded.model(ids) - ref).abs().max() < 1e-5

    again = upload(client, data, name)  # the same bytes again: the stored record, not a second import
    assert again.status_code == 200 and again.json()["id"] == record["id"]
    assert not any((root / "data" / "tmp").iterdir())  # the archive and its unpacked folder are gone


# -- bad archives ------------------------------------------------------------------------------------

CANARY = hf_tiny.CANARY
RunsCode = hf_tiny.RunsCode  # unpickling it creates a file: the proof that a pickle was (not) loaded


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, bytes]:
    """The files of a tiny RWKV folder, by name."""
    folder = hf_tiny.save_tiny("rwkv", tmp_path_factory.mktemp("good") / "rwkv")
    return dict(folder_entries(folder))


def with_config(good: dict[str, bytes], **changes) -> dict[str, bytes]:
    config = json.loads(good["config.json"])
    config.update(changes)
    return {**good, "config.json": json.dumps(config).encode()}


def directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the mode below is read
    info.external_attr = (0o120777 << 16)
    return info, target.encode()


def claims_ten_gigabytes() -> bytes:
    """A .tar.gz whose one member's header claims 10 GB (its data is not there: the header is enough)."""
    info = tarfile.TarInfo("model.safetensors")
    info.size = 10 * 1024**3
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)


def header_lies(good: dict[str, bytes]) -> bytes:
    """A zip whose central directory says config.json is 10 bytes long: it is longer."""
    data = bytearray(zip_bytes(list(good.items())))
    name = b"config.json"
    central = data.index(b"PK\x01\x02")  # the first central directory header
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, 10)  # uncompressed size
    local = struct.unpack_from("<I", data, central + 42)[0]
    struct.pack_into("<I", data, local + 22, 10)
    return bytes(data)


def bomb() -> bytes:
    return zip_bytes([("config.json", b"{}"), ("model.safetensors", b"\0" * (20 * MiB))])


BAD = {
    # id: (archive bytes from the good files, file name, status, words the detail must hold)
    "traversal-zip": (lambda g: zip_bytes([*g.items(), ("../../evil", b"x")]), "m.zip", 422, ["'../../evil'", "'..'"]),
    "traversal-tar": (lambda g: tar_bytes([*g.items(), ("../../evil", b"x")]), "m.tar.gz", 422, ["'../../evil'", "'..'"]),
    "absolute": (lambda g: tar_bytes([*g.items(), ("/tmp/mnemoscope-evil", b"x")]), "m.tar.gz", 422, ["absolute path"]),
    "backslash": (lambda g: zip_bytes([*g.items(), ("..\\..\\evil", b"x")]), "m.zip", 422, ["backslash"]),
    "symlink-tar": (lambda g: tar_bytes([*g.items(), (symlink("link", "/etc/passwd"), b"")]), "m.tar.gz", 422,
                    ["'link'", "symbolic link", "/etc/passwd"]),
    "symlink-zip": (lambda g: zip_bytes([*g.items(), zip_symlink("link", "/etc/passwd")]), "m.zip", 422,
                    ["'link'", "symbolic link"]),
    "hardlink": (lambda g: tar_bytes([*g.items(), (hardlink("config2.json", "/etc/passwd"), b"")]), "m.tar", 422,
                 ["'config2.json'", "hard link"]),
    "ten-gigabytes": (lambda g: claims_ten_gigabytes(), "m.tar.gz", 413,
                      ["'model.safetensors'", "10737418240 bytes", "archive_max_member_bytes"]),
    "header-lies": (header_lies, "m.zip", 422, ["not a readable zip archive", "config.json"]),
    "bomb": (lambda g: bomb(), "m.zip", 413, ["'model.safetensors'", "compression", "archive_max_ratio"]),
    "thousands": (lambda g: zip_bytes([*g.items(), *((f"f{i}", b"") for i in range(3000))]), "m.zip", 413,
                  [f"more than {MEMBER_LIMIT} members", "archive_max_members"]),
    "duplicate": (lambda g: zip_bytes([*g.items(), ("config.json", b"{}")]), "m.zip", 422, ["'config.json'", "twice"]),
    "no-config": (lambda g: zip_bytes([("a/model.safetensors", g["model.safetensors"])]), "m.zip", 422,
                  ["no config.json", "a/model.safetensors"]),
    "unknown-model-type": (lambda g: zip_bytes(list(with_config(g, model_type="llama").items())), "m.zip", 422,
                           ["model_type 'llama' is not supported", "mamba2"]),
    "layers-100000": (lambda g: zip_bytes(list(with_config(g, num_hidden_layers=100_000).items())), "m.zip", 422,
                      ["num_hidden_layers 100000", "upload_max_layers", "Nothing was built"]),
    "hidden-size-1000000": (lambda g: zip_bytes(list(with_config(g, hidden_size=1_000_000).items())), "m.zip", 422,
                            ["hidden_size 1000000", "worker_memory_mb", "No weight was loaded"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_archive_is_refused_naming_the_problem(client, root, good, case):
    make, name, status, words = BAD[case]
    before_files, before_records = every_file(root), client.get("/api/checkpoints").json()
    response = upload(client, make(good), name)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{name}: "), detail
    for word in words:
        assert word in detail, (word, detail)
    assert every_file(root) == before_files  # nothing unpacked anywhere, nothing left in tmp/
    assert not (root.parent / "evil").exists() and not Path("/tmp/mnemoscope-evil").exists()
    assert client.get("/api/checkpoints").json() == before_records


def test_config_too_big_to_build_is_priced_not_built(client, good):
    response = upload(client, zip_bytes(list(with_config(good, hidden_size=1_000_000).items())), "big.zip")
    assert response.status_code == 422
    budget = response.json()["budget"]
    assert budget["limit"] == "worker_memory_mb" and budget["value"] > budget["maximum"]
    assert budget["parameters"] > 10**12  # counted on the meta device: materialised, it would be terabytes


def test_pickled_weights_only_are_refused_and_never_unpickled(client, root, good, tmp_path):
    marker = tmp_path / "unpickled"
    files = {"config.json": good["config.json"], "pytorch_model.bin": pickle.dumps(RunsCode(marker))}
    response = upload(client, tar_bytes(list(files.items())), "pickled.tar.gz")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "pytorch_model.bin" in detail and "never unpickles" in detail and "safe_serialization=True" in detail
    assert str(root) not in detail  # the temporary folder's path is not shown
    assert not marker.exists()


def test_remote_code_is_refused_and_never_imported(client, good, tmp_path):
    marker = tmp_path / "imported"
    files = with_config(good, auto_map={"AutoModelForCausalLM": f"{CANARY}.Evil", "AutoConfig": f"{CANARY}.Cfg"})
    files[f"{CANARY}.py"] = f"open({str(marker)!r}, 'w').close()\n".encode()
    response = upload(client, zip_bytes(list(files.items())), "remote.zip")
    assert response.status_code == 422
    assert "auto_map" in response.json()["detail"] and "remote code" in response.json()["detail"]
    assert not marker.exists()


def test_archives_are_told_by_their_bytes_and_a_zip_by_its_name():
    tar = tar_bytes([("config.json", b"{}")], gz=False)
    assert archive_format(tar[:512], "anything") == "tar"
    assert archive_format(b"\x1f\x8b\x08\x00" + b"\0" * 12, "model.bin") == "tar.gz"
    zipped = zip_bytes([("config.json", b"{}")])
    assert archive_format(zipped[:512], "model.ZIP") == "zip"
    assert archive_format(zipped[:512], "model.pt") is None  # PyTorch's own zip format: the checkpoint loader's
    # safetensors bytes are not an archive, even when their header's length begins like gzip's magic
    assert archive_format(b"\x1f\x8b\0\0\0\0\0\0{" + b" " * 503, "model.tar.gz") is None
