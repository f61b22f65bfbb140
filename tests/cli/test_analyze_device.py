"""`mnemoscope analyze --device`: CPU by default; CUDA on a machine without it is one clear line."""
from __future__ import annotations

import torch

from mnemoscope.cli import main


def test_device_cuda_without_cuda(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = tmp_path / "never-read.safetensors"  # the device is checked before anything loads
    assert main(["analyze", str(missing), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device: device 'cuda' was asked for but CUDA is not available on this machine" in err
    assert "Traceback" not in err


def test_device_cpu_runs(pytorch_ntm_file, capsys):
    assert main(["analyze", str(pytorch_ntm_file), "--task-param", "min_length=3", "--task-param", "max_length=3",
                 "--samples", "2", "--device", "cpu"]) == 0
    assert "memory reliance" in capsys.readouterr().out
