"""Per-layer necessity in the reliance verdict: each layer's memory or bypass site removed on its
own, on models whose answer we know by construction (a committed hybrid whose recall goes through its
memory layer; a Hugging Face hybrid with one memory layer's output cut)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnemoscope.analysis.layers import layer_kind, layer_parts
from mnemoscope.analysis.reliance import HIGH, reliance
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.tasks import make_task

ZOO = Path(__file__).resolve().parents[2] / "mnemoscope" / "zoo"


def _analyse(file: str, n_boot: int = 200, edit=None):
    ckpt = load_checkpoint(ZOO / file)
    if edit is not None:
        edit(ckpt.model)
    task = make_task(ckpt.meta.task)
    return ckpt.model, reliance(ckpt.model, task, task.sample(32, 0), n_boot=n_boot, seed=0)


def test_layer_kind_reads_the_site_name():
    assert layer_kind("layers.3.ssm.out") == "ssm"
    assert layer_kind("layers.12.linear_attention.out") == "linear_attention"


def test_short_window_hybrid_needs_its_memory_layer_not_its_attention():
    """hybrid-short-window: attention sees 4 tokens, so every recall goes through layer 0's memory."""
    model, res = _analyse("hybrid-short-window.safetensors")
    assert [(r["layer"], r["kind"], r["role"]) for r in res.layers] == [(0, "memory", "memory"), (2, "attention", "bypass")]
    memory, attention = res.layers
    assert memory["needed"] and memory["necessity"]["ci95"][0] >= HIGH
    assert not attention["needed"] and attention["necessity"]["ci95"][1] < 0.1
    # one layer that is the whole of memory measures what removing memory measures
    assert memory["necessity"] == res.necessity
    line = next(x for x in res.evidence if x.startswith("per layer"))
    assert "the task needs layer 0 (memory)" in line and "layer 2 attention (bypass) 0%" in line
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["layers"][0] == {"layer": 0, "kind": "memory", "site": "layers.0.memory.out", "role": "memory",
                              "necessity": res.necessity, "needed": True}


def test_models_without_layers_have_no_layer_rows(ntm):
    task = make_task("copy", min_length=20, max_length=20)
    assert layer_parts(ntm) == []
    res = reliance(ntm, task, task.sample(8, 0), n_boot=50)
    assert res.layers == [] and not any(x.startswith("per layer") for x in res.evidence)
