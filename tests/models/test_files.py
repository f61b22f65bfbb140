"""Atomic writes and format sniffing, shared by checkpoints and the server's store."""
import os
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from mnemoscope.models.files import format_from_name, sniff_format, write_atomic


def test_write_atomic_bytes_or_writer(tmp_path):
    target = tmp_path / "f.bin"
    assert write_atomic(target, b"one") == target
    assert target.read_bytes() == b"one"
    write_atomic(target, lambda f: (f.write(b"tw"), f.write(b"o")))
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("fail", ["writer", "rename"])
def test_write_atomic_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch, fail):
    target = tmp_path / "f.bin"
    write_atomic(target, b"old")

    def broken_writer(f):
        f.write(b"half")
        raise OSError("disk full")

    if fail == "rename":
        monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, broken_writer if fail == "writer" else b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_sniff_format_from_bytes_and_files(tmp_path):
    safetensors = st_save({"w": torch.zeros(2)})
    # a header length whose low byte is 0x80 still reads as safetensors, not as a pickle
    padded = struct.pack("<Q", 0x80) + b"{" + b" " * 0x7F
    torch.save({"w": torch.zeros(2)}, tmp_path / "zip")
    assert sniff_format(safetensors) == "safetensors"
    assert sniff_format(padded) == "safetensors"
    assert sniff_format(b"PK\x03\x04rest") == "torch"
    assert sniff_format(b"\x80\x02}q\x00") == "torch"  # a legacy pickle stream
    assert sniff_format(tmp_path / "zip") == "torch"
    (tmp_path / "st").write_bytes(safetensors)
    assert sniff_format(tmp_path / "st") == "safetensors"
    assert sniff_format(b"hello world") is None
    assert sniff_format(b"") is None


def test_format_from_name():
    assert format_from_name("a/model.safetensors") == "safetensors"
    assert [format_from_name(f"m{s}") for s in (".pt", ".PTH", ".bin", ".ckpt", ".model")] == ["torch"] * 5
    assert format_from_name("model.tar.gz") is None
    assert format_from_name("model") is None
