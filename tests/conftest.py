"""Shared fixtures. The pytorch-ntm fixture is read from ../shared (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MNEMOSCOPE_SHARED", REPO.parent / "shared"))
PYTORCH_NTM_FILE = SHARED / "external" / "pytorch-ntm" / "copy-task-1-batch-40000.model"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Starlette's TestClient sends `Host: testserver`; the server answers only names it knows
# (DNS-rebinding guard), so tests name that one too. Live servers are reached at 127.0.0.1.
os.environ.setdefault("MNEMOSCOPE_ALLOWED_HOSTS", "testserver")
torch.set_num_threads(1)  # 2-core machine, tests are small: avoid oversubscription


@pytest.fixture(scope="session")
def pytorch_ntm_file() -> Path:
    # A missing fixture is a failure, not a skip: CI always has ../shared.
    assert PYTORCH_NTM_FILE.exists(), f"fixture missing: {PYTORCH_NTM_FILE}"
    return PYTORCH_NTM_FILE
