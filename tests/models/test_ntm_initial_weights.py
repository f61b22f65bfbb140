"""The NTM's initial weightings (Collier & Beel 2018): learned by default for new models, and
a stored config written before the flag existed keeps the all-zero weightings it was trained
with, so old checkpoints compute exactly what they did."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnemoscope.analysis.utilization import collapse_check
from mnemoscope.models import zoo
from mnemoscope.models.checkpoints import load_checkpoint, save_checkpoint
from mnemoscope.models.ntm import NTM, NTMConfig
from mnemoscope.models.registry import make_config
from mnemoscope.models.tasks import make_task

# outputs of committed zoo NTMs on task.sample(2, seed 0), computed before the flag existed
LEGACY_OUTPUTS = Path(__file__).parent / "data" / "ntm_legacy_outputs.json"


@pytest.mark.parametrize("name", sorted(json.loads(LEGACY_OUTPUTS.read_text())))
def test_a_committed_ntm_computes_bit_identical_outputs(name):
    reference = json.loads(LEGACY_OUTPUTS.read_text())[name]
    ckpt = load_checkpoint(zoo.default_zoo_dir() / f"{name}.safetensors")
    assert "initial_weights" not in ckpt.meta.config  # stored before the flag: its legacy meaning applies
    assert ckpt.model.config.initial_weights == "zero"
    batch = make_task(ckpt.meta.task).sample(2, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out = ckpt.model(batch.inputs)
    finally:
        torch.set_num_threads(threads)
    expected = torch.tensor(reference["values"], dtype=out.dtype).view(reference["shape"])
    assert torch.equal(out, expected)


def test_new_configs_learn_their_initial_weightings_and_stored_ones_keep_what_they_say():
    assert NTMConfig().initial_weights == "learned"
    assert make_config("ntm", {}).initial_weights == "learned"
    assert make_config("ntm", {}, stored=True).initial_weights == "zero"
    assert make_config("ntm", {"initial_weights": "learned"}, stored=True).initial_weights == "learned"
    with pytest.raises(ValueError, match="initial_weights"):
        NTMConfig(initial_weights="uniform")


def test_learned_weightings_are_memory_parameters_and_start_non_uniform():
    torch.manual_seed(0)
    model = NTM(NTMConfig(memory_slots=8, memory_width=4, controller_size=8, read_heads=2))
    assert {"read_weights_init", "write_weights_init"} <= set(model.component_groups()["memory"])
    w_read, w_write = model.initial_weights(torch.zeros(3, 5, model.config.input_size))
    assert w_read.shape == (3, 2, 8) and w_write.shape == (3, 1, 8)
    assert torch.allclose(w_read.sum(-1), torch.ones(3, 2))
    assert w_read[0].max() - w_read[0].min() > 0.05  # not uniform: the slots' symmetry is broken
    zero = NTM(NTMConfig(memory_slots=8, memory_width=4, controller_size=8, initial_weights="zero"))
    assert not any("weights_init" in n for n, _ in zero.named_parameters())


def _collapsed(initial_weights: str) -> bool:
    torch.manual_seed(0)
    task = make_task({"name": "copy", "params": {"bits": 4, "min_length": 2, "max_length": 3}})
    model = NTM(NTMConfig(input_size=task.input_size, output_size=task.output_size, controller_size=16,
                          memory_slots=8, memory_width=8, memory_init="constant", initial_weights=initial_weights))
    return any(s.collapsed for s in collapse_check(model, task.sample(8, 0)))


def test_the_constant_memory_collapses_with_zero_weightings_only():
    assert _collapsed("zero")
    assert not _collapsed("learned")


def test_learned_weightings_survive_a_checkpoint(tmp_path):
    task = make_task({"name": "copy", "params": {"bits": 4, "min_length": 1, "max_length": 3}})
    torch.manual_seed(1)
    model = NTM(NTMConfig(input_size=task.input_size, output_size=task.output_size, controller_size=8,
                          memory_slots=6, memory_width=4)).eval()
    path = save_checkpoint(tmp_path / "ntm.safetensors", model, task=task.spec())
    loaded = load_checkpoint(path)
    assert loaded.meta.config["initial_weights"] == "learned"
    x = task.sample(2, 0).inputs
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
