"""Fixtures for the analysis tests: tiny instances of every registered architecture, and
the real pytorch-ntm copy model with surgical edits (memory ignored, bypass removed)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mnemoscope.models.registry import ARCHITECTURES, _load_all, architecture
from mnemoscope.models.tasks import make_task

# Small configs per architecture. An architecture missing here is still tested, built
# from its defaults with the task's sizes: every registered one must work.
TINY = {
    "lstm": dict(hidden_size=8),
    "ntm": dict(controller_size=8, memory_slots=8, memory_width=4),
    "dnc": dict(controller_size=8, memory_slots=6, memory_width=4, read_heads=2),
    "mamba": dict(d_model=8, n_layer=2, d_state=4, d_conv=2, expand=2),
    "sequence": dict(d_model=16, heads=2, blocks=["memory", "attention", "ssm", "mlp"], window=3,
                     ssm_d_state=4, ssm_d_conv=2, chunk_size=4),
}


def registered_archs() -> list[str]:
    _load_all()
    return sorted(ARCHITECTURES)


# A Hugging Face model takes token ids, so it is analysed on a token task: a tiny
# Qwen3-Next-style hybrid (Gated DeltaNet + attention) on MQAR.
TOKEN_ARCHS = {"hf"}
HF_TINY = dict(model_type="qwen3_next", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, intermediate_size=64,
               layer_types=["linear_attention", "full_attention"], linear_key_head_dim=8,
               linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4, num_experts=0,
               mlp_only_layers=[0, 1], use_cache=False)


def tiny_task(arch: str | None = None):
    if arch in TOKEN_ARCHS:
        return make_task("mqar", vocab_size=16, seq_len=12, num_pairs=2)
    return make_task("copy", bits=3, min_length=3, max_length=3)  # T = 7


def _hf_config(task) -> dict:
    from transformers import AutoConfig

    if getattr(task, "vocab_size", None) is None:
        raise TypeError(f"a Hugging Face model takes token ids; task {task.name!r} has none")

    fields = {k: v for k, v in HF_TINY.items() if k != "model_type"}
    return AutoConfig.for_model(HF_TINY["model_type"], vocab_size=task.vocab_size, **fields).to_dict()


def tiny_model(arch: str, task=None, seed: int = 0):
    task = task or tiny_task(arch)
    cls = architecture(arch)
    if arch == "hf":
        torch.manual_seed(seed)
        return cls(cls.Config(hf_config=_hf_config(task))).eval()
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    config = {k: v for k, v in TINY.get(arch, {}).items() if k in fields}
    config.update({k: v for k, v in (("input_size", task.input_size), ("output_size", task.output_size))
                   if k in fields})
    torch.manual_seed(seed)
    model = cls(cls.Config(**config))
    model.eval()
    return model


@pytest.fixture
def ntm(pytorch_ntm_file):
    """The real pytorch-ntm copy model (fresh per test: some tests edit its weights)."""
    from mnemoscope.models.importers.pytorch_ntm import import_file

    model, _ = import_file(pytorch_ntm_file)
    return model


def ignore_memory(model):
    """Zero the weights through which reads reach the output and the controller, so the
    memory is still addressed, read and written (busy weights) but nothing uses the reads."""
    M, R = model.config.memory_width, model.config.read_heads
    H = model.config.controller_size
    with torch.no_grad():
        model.fc.weight[:, H:] = 0
        model.controller.lstm.weight_ih_l0[:, model.config.input_size:] = 0
    assert model.fc.weight.shape[1] == H + R * M
    return model


def remove_bypass(model):
    """Zero the output layer's controller columns: the output sees only the reads."""
    with torch.no_grad():
        model.fc.weight[:, :model.config.controller_size] = 0
    return model


def pytest_generate_tests(metafunc):
    # every registered architecture, discovered at collection time
    if "arch" in metafunc.fixturenames:
        metafunc.parametrize("arch", registered_archs())


@pytest.fixture
def task(request):
    # the task the architecture under test takes (tests parametrised over `arch`)
    callspec = getattr(request.node, "callspec", None)
    return tiny_task(callspec.params.get("arch") if callspec else None)


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def decorative_ntm(ntm):
    return ignore_memory(ntm)


@pytest.fixture
def no_bypass_ntm(ntm):
    return remove_bypass(ntm)
