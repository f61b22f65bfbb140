"""`mnemoscope analyze`: checkpoints in, a report (or JSON) out, user mistakes as CLIError."""
import json

import pytest

from mnemoscope.cli import main


def test_analyze_pytorch_ntm_json(pytorch_ntm_file, capsys):
    assert main(["analyze", str(pytorch_ntm_file), "--task-param", "min_length=8", "--task-param", "max_length=8",
                 "--samples", "4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"]["name"] == "wrong_bits"
    assert d["reliance"]["verdict"] == "functional"
    assert d["task"] == {"name": "copy", "params": {"bits": 8, "min_length": 8, "max_length": 8}}


def test_analyze_saved_checkpoint_text(tmp_path, make_model, task, capsys):
    from mnemoscope.models.checkpoints import save_checkpoint

    path = save_checkpoint(tmp_path / "m.safetensors", make_model("dnc", task), task=task.spec(), step=3)
    assert main(["analyze", str(path), "--samples", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "memory reliance" in out and "step 3" in out


@pytest.mark.parametrize("argv, message", [
    (["analyze", "/no/such/file.safetensors"], "no such file"),
    (["analyze", "{ckpt}", "--task", "mqar"], "input_size"),
    (["analyze", "{ckpt}", "--task-param", "nokey"], "KEY=VALUE"),
    (["analyze", "{ckpt}", "--task-param", "speed=3"], "no parameters"),
    (["analyze", "{ckpt}", "--samples", "1"], "at least 2"),
])
def test_user_mistakes(pytorch_ntm_file, capsys, argv, message):
    argv = [a.replace("{ckpt}", str(pytorch_ntm_file)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
