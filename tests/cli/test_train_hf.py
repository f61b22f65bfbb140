"""`mnemoscope train --arch hf --hf-config FILE.json`: a Hugging Face model built from its config and
trained with the usual loop into the self-describing arch "hf" checkpoint; configs that would run
remote code, an unsupported model_type or a vocabulary the task does not fit are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnemoscope.cli import main
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.hf import HF_CONFIG_DIR, bundled_hf_config

MQAR = ["--task", "mqar", "--task-param", "vocab_size=64", "--task-param", "seq_len=16", "--task-param", "num_pairs=2"]
QUICK = ["--steps", "2", "--batch-size", "4", "--eval-size", "4", "--no-progress", "--threads", "1"]


@pytest.mark.parametrize("name", sorted(p.stem for p in HF_CONFIG_DIR.glob("*.json")))
def test_train_writes_an_hf_checkpoint_that_changed(tmp_path, name):
    config = bundled_hf_config(name)
    out = tmp_path / "run"
    assert main(["train", "--arch", "hf", "--hf-config", str(HF_CONFIG_DIR / f"{name}.json"), *MQAR, *QUICK,
                 "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "final.safetensors")
    assert ckpt.meta.arch == "hf" and ckpt.meta.config["hf_config"] == config
    assert ckpt.meta.task["name"] == "mqar" and ckpt.meta.step == 2
    # the same config untrained, same seed: training moved the weights
    torch.manual_seed(0)
    from mnemoscope.models.hf import HFConfig, HFModel

    fresh = HFModel(HFConfig(config)).state_dict()
    trained = ckpt.model.state_dict()
    assert fresh.keys() == trained.keys()
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh)
    history = json.loads((out / "history.json").read_text())
    assert history["arch"] == "hf" and history["steps"] == 2


def _write(tmp_path: Path, **changes) -> Path:
    config = {**bundled_hf_config("qwen3_next_tiny"), **changes}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"auto_map": {"AutoModelForCausalLM": "evil.Model"}}, "remote code"),
    ({"model_type": "llama"}, "not supported"),
    ({"vocab_size": 32}, "vocab_size 32"),
])
def test_refused_configs(tmp_path, capsys, changes, message):
    out = tmp_path / "run"
    assert main(["train", "--arch", "hf", "--hf-config", str(_write(tmp_path, **changes)), *MQAR, *QUICK,
                 "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_hf_config_goes_with_arch_hf_only(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["train", "--arch", "ntm", "--hf-config", str(path), *MQAR, *QUICK, "--out", str(tmp_path / "a")]) == 2
    assert "--hf-config is for --arch hf" in capsys.readouterr().err
    assert main(["train", "--arch", "hf", *MQAR, *QUICK, "--out", str(tmp_path / "b")]) == 2
    assert "--arch hf needs --hf-config" in capsys.readouterr().err
    assert main(["train", "--arch", "hf", "--hf-config", str(path), "--model-param", "hidden_size=8", *MQAR, *QUICK,
                 "--out", str(tmp_path / "c")]) == 2
    assert "edit the file" in capsys.readouterr().err
