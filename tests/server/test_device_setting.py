"""Settings.device: jobs run on the CPU unless told; a GPU that is not there stops the start."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from mnemoscope.server.settings import Settings


def test_default_is_cpu():
    assert Settings(_env_file=None).device == "cpu"


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValidationError, match="CUDA is not available on this machine"):
        Settings(device="cuda")
    monkeypatch.setenv("MNEMOSCOPE_DEVICE", "cuda:0")
    with pytest.raises(ValidationError, match="'cuda:0' was asked for"):
        Settings()


def test_serve_refuses_a_missing_gpu(monkeypatch, capsys, tmp_path):
    from mnemoscope.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MNEMOSCOPE_DEVICE", "cuda")
    assert main(["serve", "--data-dir", str(tmp_path), "--port", "0"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
