"""Safe, self-describing checkpoints: round trips, and a clear CheckpointError for every bad file."""
import json
import os
import pickle
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mnemoscope.models import build_model
from mnemoscope.models.checkpoints import (
    FORMAT,
    CheckpointError,
    inspect_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

TASK = {"name": "copy", "params": {"bits": 2, "min_length": 1, "max_length": 3}}


def lstm(seed=0):
    torch.manual_seed(seed)
    return build_model("lstm", dict(input_size=3, output_size=2, hidden_size=5))


@pytest.fixture
def saved(tmp_path):
    model = lstm()
    path = save_checkpoint(tmp_path / "m.safetensors", model, task=TASK, step=7,
                           metrics={"wrong_bits": 0.5}, name="tiny", extra={"note": "hi"})
    return model, path


def write_safetensors(path, tensors, metadata):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def raw_parts(path):
    """(header dict, data bytes) of a safetensors file."""
    blob = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def write_raw(path, header, data=b""):
    h = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


def metadata_of(path):
    return raw_parts(path)[0]["__metadata__"]


def rewrite(saved_path, tmp_path, *, meta_changes=None, tensors=None, name="bad.safetensors"):
    """A copy of a saved checkpoint with changed metadata fields and/or tensors."""
    from safetensors.torch import load_file

    meta = dict(metadata_of(saved_path))
    for k, v in (meta_changes or {}).items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    t = load_file(str(saved_path)) if tensors is None else tensors
    return write_safetensors(tmp_path / name, t, meta)


# -- round trips ------------------------------------------------------------------------------

def test_round_trip_same_outputs_and_metadata(saved):
    model, path = saved
    ckpt = load_checkpoint(path)
    assert not ckpt.model.training
    assert ckpt.parameters == sum(p.numel() for p in model.parameters())
    x = torch.randn(3, 6, 3)
    assert torch.equal(ckpt.model(x), model(x))
    m = ckpt.meta
    assert (m.arch, m.step, m.name, m.task, m.metrics, m.extra) == ("lstm", 7, "tiny", TASK, {"wrong_bits": 0.5}, {"note": "hi"})
    assert m.config == {"input_size": 3, "output_size": 2, "hidden_size": 5, "num_layers": 1}
    assert m.format == FORMAT and m.format_version == 1 and m.created_at.endswith("+00:00")
    assert m.to_dict()["config"] == m.config
    assert inspect_checkpoint(path) == m


def test_metadata_is_json_per_field(saved):
    _, path = saved
    meta = metadata_of(path)
    assert json.loads(meta["format"]) == "mnemoscope-checkpoint"
    assert json.loads(meta["format_version"]) == 1
    assert json.loads(meta["config"])["hidden_size"] == 5
    assert json.loads(meta["task"]) == TASK
    assert json.loads(meta["step"]) == 7


def test_save_accepts_task_object_and_cleans_metrics(tmp_path):
    class FakeTask:
        def spec(self):
            return TASK

    path = save_checkpoint(tmp_path / "a.safetensors", lstm(), task=FakeTask(),
                           metrics={"loss": torch.tensor(0.25), "bad": float("nan")})
    meta = load_checkpoint(path).meta
    assert meta.task == TASK
    assert meta.metrics == {"loss": 0.25, "bad": None}  # JSON has no NaN
    assert meta.name == "lstm-copy"


def test_save_refuses_metadata_with_no_json_form(tmp_path):
    with pytest.raises(ValueError, match="field 'extra' is not JSON-serialisable.*object"):
        save_checkpoint(tmp_path / "a.safetensors", lstm(), task=TASK, extra={"note": object()})
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_save_is_atomic_and_leaves_no_temp_files(saved, tmp_path, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, lstm(seed=1), task=TASK, step=8)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # temp file removed
    save_checkpoint(path, lstm(seed=1), task=TASK, step=8)  # overwriting works
    assert load_checkpoint(path).meta.step == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_refuses_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(tmp_path / "m.pt", lstm(), task=TASK)


def test_ntm_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("ntm", dict(input_size=3, output_size=2, controller_size=8, memory_slots=6, memory_width=4))
    path = save_checkpoint(tmp_path / "ntm.safetensors", model, task=TASK)
    ckpt = load_checkpoint(path)
    x = torch.randn(2, 5, 3)
    assert torch.equal(ckpt.model(x), model.eval()(x))
    assert ckpt.meta.arch == "ntm" and ckpt.meta.config["memory_slots"] == 6


def test_torch_dict_with_the_same_fields(saved, tmp_path):
    model, _ = saved
    payload = {"format": FORMAT, "format_version": 1, "arch": "lstm", "config": model.config_dict(),
               "task": TASK, "step": 3, "metrics": {}, "state_dict": model.state_dict()}
    path = tmp_path / "m.pt"
    torch.save(payload, path)
    ckpt = load_checkpoint(path)
    x = torch.randn(2, 4, 3)
    assert torch.equal(ckpt.model(x), model(x))
    assert ckpt.meta.step == 3 and ckpt.meta.task == TASK
    assert inspect_checkpoint(path).arch == "lstm"


def test_pytorch_ntm_raw_state_dict_goes_through_the_importer(pytorch_ntm_file, tmp_path):
    ckpt = load_checkpoint(pytorch_ntm_file)  # a legacy torch.save with a `.model` suffix
    assert ckpt.meta.arch == "ntm"
    assert ckpt.meta.task["name"] == "copy"
    assert ckpt.meta.config["memory_slots"] == 128
    assert ckpt.meta.extra["imported_from"] == "pytorch-ntm"
    assert not ckpt.model.training
    # and it survives being re-saved in our format
    path = save_checkpoint(tmp_path / "imported.safetensors", ckpt.model, task=ckpt.meta.task, step=ckpt.meta.step)
    again = load_checkpoint(path)
    x = torch.zeros(1, 5, 9)
    x[0, :2, :8] = torch.randint(0, 2, (2, 8)).float()
    x[0, 2, 8] = 1
    assert torch.equal(again.model(x), ckpt.model(x))


# -- bad files: each one a CheckpointError that names the problem ---------------------------

def test_missing_and_empty_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "e.safetensors")
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "e.pt")


def test_truncated_safetensors(saved, tmp_path):
    _, path = saved
    blob = path.read_bytes()
    short = tmp_path / "short.safetensors"
    short.write_bytes(blob[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(short)
    half = tmp_path / "half.safetensors"
    half.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(half)
    (n,) = struct.unpack("<Q", blob[:8])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(blob[: 8 + n + 10])  # header intact, tensor data cut off
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_absurd_header_length(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CheckpointError, match="header claims"):
        load_checkpoint(path)


def test_header_claiming_huge_tensors_is_refused_before_reading(tmp_path, monkeypatch):
    import safetensors.torch

    def never(*a, **k):
        raise AssertionError("safetensors must not be handed this file")

    monkeypatch.setattr(safetensors.torch, "load_file", never)
    monkeypatch.setattr(safetensors.torch, "safe_open", never, raising=False)
    meta = {"format": json.dumps(FORMAT), "format_version": "1", "arch": '"lstm"', "config": "{}"}
    header = {"__metadata__": meta,
              "w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}
    path = write_raw(tmp_path / "bomb.safetensors", header, b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"tensor 'w' claims bytes 0\.\.4000000000000"):
        load_checkpoint(path)
    # offsets inside the file, but not what dtype*shape needs
    header["w"] = {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 16]}
    write_raw(path, header, b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"'w': F32 \(1000000,\) needs 4000000 bytes"):
        load_checkpoint(path)
    header["w"] = {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}
    write_raw(path, header, b"\0" * 16)
    with pytest.raises(CheckpointError, match="invalid shape"):
        load_checkpoint(path)
    header["w"] = {"dtype": "X99", "shape": [4], "data_offsets": [0, 16]}
    write_raw(path, header, b"\0" * 16)
    with pytest.raises(CheckpointError, match="unknown dtype"):
        load_checkpoint(path)


def test_header_not_json(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_plain_safetensors_without_metadata(tmp_path):
    path = write_safetensors(tmp_path / "plain.safetensors", lstm().state_dict(), None)
    with pytest.raises(CheckpointError, match="no metadata.*mnemoscope import"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": '"something-else"'}, "format is 'something-else'"),
        ({"format": None}, "no 'format' field"),
        ({"format_version": "2"}, "format version 2 is not supported"),
        ({"format_version": None}, "format version None"),
        ({"arch": None}, "no 'arch' field"),
        ({"config": "{not json"}, "'config' is not valid JSON"),
        ({"config": "[1, 2]"}, "'config' should be object"),
        ({"step": '"seven"'}, "'step' should be int"),
    ],
)
def test_missing_or_invalid_metadata(saved, tmp_path, changes, message):
    _, path = saved
    bad = rewrite(path, tmp_path, meta_changes=changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(bad)


def test_unknown_architecture_lists_known_ones(saved, tmp_path):
    _, path = saved
    bad = rewrite(path, tmp_path, meta_changes={"arch": '"transformer-xxl"'})
    with pytest.raises(CheckpointError, match=r"unknown architecture 'transformer-xxl'; known: \[.*'lstm'.*'ntm'"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="unknown architecture"):
        inspect_checkpoint(bad)


def test_config_with_unknown_keys(saved, tmp_path):
    _, path = saved
    config = json.loads(metadata_of(path)["config"]) | {"hidden_sise": 7}
    bad = rewrite(path, tmp_path, meta_changes={"config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"unknown keys \['hidden_sise'\]"):
        load_checkpoint(bad)


def test_config_with_a_bad_value(saved, tmp_path):
    _, path = saved
    config = json.loads(metadata_of(path)["config"]) | {"hidden_size": "five"}
    bad = rewrite(path, tmp_path, meta_changes={"config": json.dumps(config)})
    with pytest.raises(CheckpointError, match="cannot build 'lstm'"):
        load_checkpoint(bad)


def test_wrong_tensor_names(saved, tmp_path):
    model, path = saved
    sd = dict(model.state_dict())
    sd["head.weights"] = sd.pop("head.weight")
    bad = rewrite(path, tmp_path, tensors=sd)
    with pytest.raises(CheckpointError, match=r"missing tensors \['head.weight'\]; unexpected tensors \['head.weights'\]"):
        load_checkpoint(bad)


def test_wrong_tensor_shape_for_config(saved, tmp_path):
    model, path = saved
    sd = dict(model.state_dict())
    sd["head.weight"] = torch.zeros(2, 6)
    bad = rewrite(path, tmp_path, tensors=sd)
    with pytest.raises(CheckpointError, match=r"'head.weight' has shape \(2, 6\), expected \(2, 5\)"):
        load_checkpoint(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(saved, tmp_path, value):
    model, path = saved
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["head.bias"][1] = value
    bad = rewrite(path, tmp_path, tensors=sd)
    with pytest.raises(CheckpointError, match="'head.bias' has 1 NaN or infinite"):
        load_checkpoint(bad)


class _Payload:
    """Unpickling this object opens (and so creates) a file: code run from the checkpoint."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path, writer):
    victim = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"state_dict": {"w": torch.zeros(1)}, "arch": "lstm", "x": _Payload(victim)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(path)
    assert not victim.exists()
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        inspect_checkpoint(path)
    assert not victim.exists()
    # the payload is live: an unguarded load would have run it
    if writer == "pickle.dump":
        live = tmp_path / "live"
        pickle.loads(pickle.dumps(_Payload(live))).close()
        assert live.exists()


def test_torch_file_that_is_not_torch(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="could not read as a PyTorch file"):
        load_checkpoint(path)


def test_unrecognised_raw_state_dict(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(lstm().state_dict(), path)
    with pytest.raises(CheckpointError, match="raw state dict with no architecture"):
        load_checkpoint(path)


def test_torch_dict_with_bad_fields(tmp_path):
    model = lstm()
    base = {"arch": "lstm", "config": model.config_dict(), "task": TASK, "state_dict": model.state_dict()}
    path = tmp_path / "m.pt"
    torch.save(base | {"format_version": 9}, path)
    with pytest.raises(CheckpointError, match="format version 9"):
        load_checkpoint(path)
    torch.save(base | {"arch": "nope"}, path)
    with pytest.raises(CheckpointError, match="unknown architecture 'nope'"):
        load_checkpoint(path)
    sd = dict(model.state_dict())
    sd["head.bias"] = torch.tensor([0.0, float("nan")])
    torch.save(base | {"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match="'head.bias' has 1 NaN"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="holding list, expected a dict"):
        load_checkpoint(path)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match=r"unknown file type '\.txt'"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path)


def test_content_decides_for_unfamiliar_suffixes(saved, tmp_path):
    model, path = saved
    renamed = tmp_path / "weights.v1"
    renamed.write_bytes(path.read_bytes())
    assert load_checkpoint(renamed).meta.step == 7
    legacy = tmp_path / "weights.v2"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="raw state dict"):  # read as torch, safely
        load_checkpoint(legacy)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# -- sizes checked before anything is allocated -----------------------------------------------

def _meta_fields(arch, config):
    return {"format": json.dumps(FORMAT), "format_version": "1", "arch": json.dumps(arch),
            "config": json.dumps(config)}


@pytest.fixture
def build_devices(monkeypatch):
    """The default device each LSTM was constructed on: 'meta' for plans, 'cpu' for real models."""
    from mnemoscope.models.registry import architecture

    cls = architecture("lstm")
    original = cls.__init__
    devices = []

    def spy(self, config):
        devices.append(torch.empty(()).device.type)
        original(self, config)

    monkeypatch.setattr(cls, "__init__", spy)
    return devices


def test_tiny_file_asking_for_a_huge_model_is_refused_without_building_it(tmp_path, build_devices):
    """The finding: 252 bytes, arch lstm, hidden_size 10000, no tensors: the model (1.6 GB)
    used to be built before the tensors were compared with it."""
    path = write_raw(tmp_path / "huge.safetensors", {"__metadata__": _meta_fields("lstm", {"hidden_size": 10000})})
    assert path.stat().st_size < 300
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="missing tensors"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 0.5
    assert build_devices == ["meta"]


def test_torch_dict_asking_for_a_huge_model_is_refused_without_building_it(tmp_path, build_devices):
    payload = {"format": FORMAT, "format_version": 1, "arch": "lstm", "config": {"hidden_size": 10000},
               "task": TASK, "state_dict": {"cells.0.weight_ih": torch.zeros(2, 2)}}
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(CheckpointError, match="missing tensors"):
        load_checkpoint(tmp_path / "huge.pt")
    assert build_devices == ["meta"]


def test_valid_checkpoint_is_planned_on_meta_then_built(saved, build_devices):
    load_checkpoint(saved[1])
    assert build_devices == ["meta", "cpu"]


def test_model_over_the_byte_cap_is_refused_before_reading_weights(saved, monkeypatch):
    from mnemoscope.models import checkpoints

    _, path = saved
    need = sum(t.numel() * t.element_size() for t in lstm().state_dict().values())
    assert load_checkpoint(path, max_bytes=need).parameters > 0
    monkeypatch.setattr(checkpoints, "_read_safetensors_tensors", lambda p: pytest.fail("weights were read"))
    with pytest.raises(CheckpointError, match=f"more than this loader's limit of {need - 1} bytes"):
        load_checkpoint(path, max_bytes=need - 1)


def test_header_dtype_kind_is_checked_before_reading_weights(saved, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from mnemoscope.models import checkpoints

    _, path = saved
    tensors = load_file(str(path))
    key = next(iter(tensors))
    tensors[key] = tensors[key].to(torch.int32)
    bad = rewrite(path, tmp_path, tensors=tensors)
    monkeypatch.setattr(checkpoints, "_read_safetensors_tensors", lambda p: pytest.fail("weights were read"))
    with pytest.raises(CheckpointError, match=f"{key}.*holds integer values, expected float"):
        load_checkpoint(bad)


def test_half_precision_weights_still_load(saved, tmp_path):
    from safetensors.torch import load_file

    model, path = saved
    half = rewrite(path, tmp_path, tensors={k: v.half() for k, v in load_file(str(path)).items()})
    loaded = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_config_that_builds_endlessly_is_stopped(tmp_path):
    path = write_raw(tmp_path / "deep.safetensors",
                     {"__metadata__": _meta_fields("lstm", {"hidden_size": 1, "num_layers": 50_000})})
    # stopped by the operation count on the meta device (the message says so), not by
    # building 50,000 layers and running out of time or memory
    with pytest.raises(CheckpointError, match="tensor operations"):
        load_checkpoint(path)


def _zip_with_declared_size(path, declared: int):
    """A torch-style zip whose one data member is stored deflated, its central directory
    entry claiming `declared` bytes uncompressed (what a zip of zeros does for real)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("archive/data/0", b"\0" * 4096)
    blob = bytearray(path.read_bytes())
    entry = blob.rindex(b"PK\x01\x02")  # the last central directory entry: archive/data/0
    struct.pack_into("<I", blob, entry + 24, declared)  # its uncompressed size
    path.write_bytes(bytes(blob))
    return path


@pytest.fixture
def torch_load_forbidden(monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))


def test_zip_that_inflates_to_a_gigabyte_is_refused_before_torch_load(tmp_path, torch_load_forbidden):
    """The finding: a 1 MB .pth of 256M zero floats went through torch.load (+1 GB) first."""
    path = _zip_with_declared_size(tmp_path / "bomb.pth", 256 * 2**20 * 4)
    assert zipfile.ZipFile(path).getinfo("archive/data/0").file_size == 2**30
    with pytest.raises(CheckpointError, match="declare 1073741[0-9]* bytes uncompressed"):
        load_checkpoint(path)


def test_really_deflated_archive_is_refused_before_torch_load(tmp_path, torch_load_forbidden):
    path = tmp_path / "zeros.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("archive/data/0", bytes(16 * 2**20))
    assert path.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match="compressed"):
        load_checkpoint(path)


def test_archive_over_the_byte_cap_is_refused_before_torch_load(saved, tmp_path, monkeypatch):
    model, _ = saved
    payload = {"format": FORMAT, "format_version": 1, "arch": "lstm", "config": model.config_dict(),
               "task": TASK, "state_dict": model.state_dict()}
    path = tmp_path / "m.pt"
    torch.save(payload, path)
    declared = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    assert load_checkpoint(path, max_bytes=declared).meta.arch == "lstm"  # torch.save archives are stored
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(CheckpointError, match=f"limit of {declared - 1} bytes"):
        load_checkpoint(path, max_bytes=declared - 1)
