"""The pytorch-ntm importer on a real checkpoint that nobody on this project trained."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from mnemoscope.models import Intervention, run_with_sites
from mnemoscope.models.importers.pytorch_ntm import convert_state_dict, import_file, looks_like_pytorch_ntm
from mnemoscope.models.ntm import NTM, NTMConfig
from mnemoscope.cli import main as cli_main

BITS = 8


@pytest.fixture(scope="module")
def raw_sd(pytorch_ntm_file):
    return torch.load(pytorch_ntm_file, weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def imported(pytorch_ntm_file):
    return import_file(pytorch_ntm_file)


def copy_batch(n: int, length: int, seed: int):
    """Copy-task batch; the task module's when it is there, checked against the layout."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, length, BITS), generator=g).float()
    T = 2 * length + 1
    x = torch.zeros(n, T, BITS + 1)
    x[:, :length, :BITS] = bits
    x[:, length, BITS] = 1
    y = torch.zeros(n, T, BITS)
    y[:, length + 1 :] = bits
    mask = torch.zeros(n, T, dtype=torch.bool)
    mask[:, length + 1 :] = True
    try:
        from mnemoscope.models.tasks import make_task

        batch = make_task("copy", bits=BITS, min_length=length, max_length=length).sample(n, seed)
    except (ImportError, ValueError):
        return x, y, mask
    L = length
    assert batch.inputs.shape == (n, T, BITS + 1) and batch.targets.shape == (n, T, BITS)
    assert torch.equal(batch.mask, mask)
    assert (batch.inputs[:, L + 1 :] == 0).all() and (batch.inputs[:, :L, BITS] == 0).all()
    assert (batch.inputs[:, L, :BITS] == 0).all() and (batch.inputs[:, L, BITS] == 1).all()
    assert torch.equal(batch.targets[:, L + 1 :], batch.inputs[:, :L, :BITS]) and (batch.targets[:, : L + 1] == 0).all()
    return batch.inputs, batch.targets, batch.mask


def wrong_bits(logits, targets, mask):
    return int((((logits > 0).float() != targets) & mask[..., None]).sum())


def reference_forward(sd, x):
    """pytorch-ntm at 74477a6, one row and one step at a time, from its README; [B, T, 8] probabilities."""
    p = {k.removeprefix("ntm."): v.double() for k, v in sd.items()}
    N, M = p["memory.mem_bias"].shape
    out = []
    for xb in x.double():
        mem = p["memory.mem_bias"].clone()
        r = p["read0_bias"][0]
        h, c = p["controller.lstm_h_bias"].reshape(-1), p["controller.lstm_c_bias"].reshape(-1)
        w_prev = {"read": torch.zeros(N), "write": torch.zeros(N)}
        ys = []

        def address(o, kind):
            k, beta, g, s, gamma = F.relu(o[:M]), F.relu(o[M]), torch.sigmoid(o[M + 1]), F.softmax(F.relu(o[M + 2 : M + 5]), 0), 1 + F.relu(o[M + 5])
            wc = F.softmax(beta * F.cosine_similarity(mem + 1e-16, (k + 1e-16)[None], dim=-1), 0)
            wg = g * wc + (1 - g) * w_prev[kind]
            wt = torch.stack([s[0] * wg[i - 1] + s[1] * wg[i] + s[2] * wg[(i + 1) % N] for i in range(N)])
            w = wt ** gamma
            w = w / (w.sum() + 1e-16)
            w_prev[kind] = w
            return w

        for xt in xb:
            gates = p["controller.lstm.weight_ih_l0"] @ torch.cat([xt, r]) + p["controller.lstm.bias_ih_l0"] \
                + p["controller.lstm.weight_hh_l0"] @ h + p["controller.lstm.bias_hh_l0"]
            i, f, gg, o = gates.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
            w = address(p["heads.0.fc_read.weight"] @ h + p["heads.0.fc_read.bias"], "read")
            r = w @ mem
            ow = p["heads.1.fc_write.weight"] @ h + p["heads.1.fc_write.bias"]
            w = address(ow, "write")
            e, a = F.relu(ow[M + 6 : 2 * M + 6]), F.relu(ow[2 * M + 6 :])
            mem = mem * (1 - torch.outer(w, e)) + torch.outer(w, a)
            ys.append(torch.sigmoid(p["fc.weight"] @ torch.cat([h, r]) + p["fc.bias"]))
        out.append(torch.stack(ys))
    return torch.stack(out).float()


def test_recognises_the_layout(raw_sd):
    assert looks_like_pytorch_ntm(raw_sd.keys())
    assert not looks_like_pytorch_ntm(NTM(NTMConfig(controller_size=4, memory_slots=4, memory_width=2)).state_dict().keys())
    assert not looks_like_pytorch_ntm([])


def test_metadata_and_config(imported):
    model, meta = imported
    assert isinstance(model, NTM) and not model.training
    assert meta == {
        "arch": "ntm",
        "config": model.config_dict(),
        "task": {"name": "copy", "params": {"bits": 8, "min_length": 1, "max_length": 20}},
        "step": 40000,
        "metrics": {},
        "source": "pytorch-ntm@74477a6",
    }
    c = model.config
    assert (c.input_size, c.output_size, c.controller_size, c.memory_slots, c.memory_width) == (9, 8, 100, 128, 20)
    assert (c.read_heads, c.write_heads, c.shift_range, c.head_activation) == (1, 1, 1, "pytorch-ntm-2017")


def test_matches_the_reference_computation(imported, raw_sd):
    model, _ = imported
    x, _, _ = copy_batch(2, 12, seed=3)
    with torch.no_grad():
        ours = torch.sigmoid(model(x))
    assert (ours - reference_forward(raw_sd, x)).abs().max() < 1e-5


def test_zero_bit_errors_on_every_length(imported):
    model, _ = imported
    errors = {}
    with torch.no_grad():
        for L in range(1, 21):
            x, y, mask = copy_batch(8, L, seed=100 + L)
            errors[L] = wrong_bits(model(x), y, mask)
    assert errors == {L: 0 for L in range(1, 21)}


@pytest.mark.parametrize("t", [0, 5, 13, 20])
def test_zeroing_a_read_changes_outputs_from_t_on(imported, t):
    model, _ = imported
    x, _, _ = copy_batch(4, 10, seed=7)  # T = 21
    with torch.no_grad():
        clean = model(x)
        y, _ = run_with_sites(model, x, interventions=[Intervention("memory.read", 0.0, steps=[t])])
    assert torch.equal(y[:, :t], clean[:, :t])
    for s in range(t, x.shape[1]):
        assert not torch.equal(y[:, s], clean[:, s]), s


def test_interventions_as_batch_rows_equal_separate_runs(imported):
    # float64: in float32 a clean run of 1 row and of 17 rows already differ by ~2e-5 on
    # this model's logits (up to ~25), from BLAS picking other kernels per batch size;
    # that noise says nothing about whether interventions stay in their own rows
    model = copy.deepcopy(imported[0]).double()
    x, _, _ = copy_batch(1, 8, seed=11)
    x = x.double()
    T = x.shape[1]
    ivs = [Intervention("memory.read", 0.0, steps=[t], rows=[t]) for t in range(T)]
    with torch.no_grad():
        batched, _ = run_with_sites(model, x.expand(T, -1, -1), interventions=ivs)
        for t in range(T):
            single, _ = run_with_sites(model, x, interventions=[Intervention("memory.read", 0.0, steps=[t])])
            assert (batched[t] - single[0]).abs().max() < 1e-5


def test_the_memory_matters(imported):
    model, _ = imported
    x, y, mask = copy_batch(8, 10, seed=5)
    with torch.no_grad():
        y_zero, _ = run_with_sites(model, x, interventions=[Intervention("memory.read", 0.0)])
    assert wrong_bits(y_zero, y, mask) > 8 * 10 * BITS // 4


def test_convert_rejects_other_layouts(raw_sd):
    with pytest.raises(ValueError, match="not a pytorch-ntm"):
        convert_state_dict({"weight": torch.zeros(2)})
    swapped = {k.replace("heads.0.fc_read", "heads.9.fc_read"): v for k, v in raw_sd.items()}
    with pytest.raises(ValueError, match="head layout"):
        convert_state_dict(swapped)
    bad = dict(raw_sd)
    bad["ntm.fc.weight"] = torch.zeros(8, 99)
    with pytest.raises(ValueError, match="fc.weight"):
        convert_state_dict(bad)


def test_import_file_rejects_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"definitely not a torch file")
    with pytest.raises(ValueError, match="not a pytorch-ntm checkpoint") as err:
        import_file(junk)
    assert "weights_only=False" not in str(err.value)
    other = tmp_path / "other.model"
    torch.save({"layer.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a pytorch-ntm"):
        import_file(other)
    code = tmp_path / "code.model"
    code.write_bytes(pickle.dumps(Intervention("memory.read", 0.0), protocol=2))
    with pytest.raises(ValueError, match="refused to unpickle") as err:
        import_file(code)
    assert "weights_only=False" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        import_file(tmp_path / "missing.model")


def test_cli_import_writes_a_loadable_checkpoint(pytorch_ntm_file, imported, tmp_path, capsys):
    from mnemoscope.models.checkpoints import load_checkpoint

    out = tmp_path / "ntm.safetensors"
    assert cli_main(["import", "pytorch-ntm", str(pytorch_ntm_file), "-o", str(out)]) == 0
    assert "imported" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    model, meta = imported
    assert ckpt.model.arch == "ntm" and ckpt.meta.config == meta["config"]
    assert ckpt.meta.task == meta["task"] and ckpt.meta.step == 40000
    assert ckpt.meta.extra["source"] == "pytorch-ntm@74477a6"
    x, _, _ = copy_batch(3, 9, seed=2)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))


@pytest.mark.parametrize("case", ["missing", "junk", "other"])
def test_cli_bad_input_exits_nonzero_with_message(case, tmp_path, capsys):
    path = tmp_path / "in.model"
    if case == "junk":
        path.write_bytes(b"\x80\x02garbage")
    elif case == "other":
        torch.save({"layer.weight": torch.zeros(3)}, path)
    out = tmp_path / "out.safetensors"
    assert cli_main(["import", "pytorch-ntm", str(path), "-o", str(out)]) != 0
    err = capsys.readouterr().err
    assert "mnemoscope import: error:" in err and str(path) in err
    assert not out.exists()
