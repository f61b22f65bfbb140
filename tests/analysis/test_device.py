"""Choosing the device: CPU by default, CUDA when asked, a clear error when it is not there."""
from __future__ import annotations

import pytest
import torch

from mnemoscope.analysis.device import resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_is_always_there(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_says_so(no_cuda, name):
    with pytest.raises(ValueError, match=r"CUDA is not available on this machine .*run on the CPU") as info:
        resolve_device(name)
    assert repr(name) in str(info.value) and torch.__version__ in str(info.value)


def test_a_gpu_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"has 1 CUDA device\(s\)"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name, message", [("tpu", "unknown device"), ("meta", "not supported"), ("", "unknown device")])
def test_other_devices_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)
