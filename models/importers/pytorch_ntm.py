"""Import a checkpoint of loudinthecloud/pytorch-ntm (the 2017 version, commit 74477a6).

That project saves a plain `state_dict` with `torch.save`; it is read here with
`torch.load(..., weights_only=True)` and nothing else. Its computation (see the
fixture's README) maps onto `NTM` with `head_activation="pytorch-ntm-2017"`:

    ntm.controller.lstm.*            -> controller.lstm.*
    ntm.controller.lstm_{h,c}_bias   -> controller.{h0,c0}
    ntm.read{i}_bias                 -> read_init[i]
    memory.mem_bias                  -> memory_bias (a fixed buffer there, never trained:
                                        memory_init="random")
    ntm.heads.{j}.fc_read / fc_write -> read_head / write_head blocks
    ntm.fc                           -> fc

pytorch-ntm runs its heads in list order, each on the memory left by the previous one.
NTM runs all read heads on the pre-write memory, then writes; the two agree when every
read head comes before the one write head (the published checkpoints have one read
head, then one write head). Other layouts are
refused rather than imported with a silently different computation.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from ..ntm import NTM, NTMConfig

SOURCE = "pytorch-ntm@74477a6"
PUBLISHED_STEP = 40000  # every copy-task checkpoint published at 74477a6 ran 40,000 batches
# copytask.py defaults at that commit
COPY_PARAMS = {"min_length": 1, "max_length": 20}

_REQUIRED = ("ntm.fc.weight", "ntm.fc.bias", "ntm.controller.lstm.weight_ih_l0",
             "ntm.controller.lstm_h_bias", "ntm.controller.lstm_c_bias", "ntm.read0_bias")
_HEAD = re.compile(r"^ntm\.heads\.(\d+)\.fc_(read|write)\.weight$")
_MEM_KEYS = ("memory.mem_bias", "ntm.memory.mem_bias")


def looks_like_pytorch_ntm(keys) -> bool:
    """True when the state_dict keys have pytorch-ntm's layout."""
    keys = set(keys)
    return (all(k in keys for k in _REQUIRED)
            and any(k in keys for k in _MEM_KEYS)
            and any(_HEAD.match(k) for k in keys))


def _heads(sd: dict[str, Tensor]) -> list[tuple[int, str]]:
    """(index, "read" | "write") in pytorch-ntm's list order, which is its execution order."""
    return sorted((int(m.group(1)), m.group(2)) for k in sd if (m := _HEAD.match(k)))


def convert_state_dict(sd: dict[str, Tensor], *, step: int = PUBLISHED_STEP) -> tuple[NTM, dict]:
    """An `NTM` (eval mode) with the checkpoint's weights, and its metadata."""
    if not isinstance(sd, dict) or not looks_like_pytorch_ntm(sd.keys()):
        keys = sorted(sd)[:8] if isinstance(sd, dict) else type(sd).__name__
        raise ValueError(f"not a pytorch-ntm state_dict: expected keys like {list(_REQUIRED[:3])} "
                         f"and ntm.heads.<i>.fc_read.weight; found {keys}")
    heads = _heads(sd)
    kinds = [kind for _, kind in heads]
    R, W = kinds.count("read"), kinds.count("write")
    if R < 1 or W != 1 or kinds != ["read"] * R + ["write"]:
        raise ValueError(f"unsupported head layout {kinds}: only read heads followed by one write head "
                         "run the same way here (pytorch-ntm applies heads one after another)")
    if any(f"ntm.read{i}_bias" not in sd for i in range(R)):
        raise ValueError(f"expected an initial read vector ntm.read<i>_bias for each of the {R} read heads")

    mem = next(sd[k] for k in _MEM_KEYS if k in sd)
    N, M = mem.shape
    H = sd["ntm.controller.lstm_h_bias"].shape[-1]
    layers = sum(1 for k in sd if re.fullmatch(r"ntm\.controller\.lstm\.weight_ih_l\d+", k))
    read_rows = sd[f"ntm.heads.{heads[0][0]}.fc_read.weight"].shape[0]
    n_shifts = read_rows - M - 3
    if n_shifts < 1 or n_shifts % 2 == 0:
        raise ValueError(f"read head has {read_rows} outputs; cannot split it into k ({M}), beta, g, s, gamma")
    in_total = sd["ntm.controller.lstm.weight_ih_l0"].shape[1]
    config = NTMConfig(
        input_size=in_total - R * M,
        output_size=sd["ntm.fc.weight"].shape[0],
        controller_size=H,
        controller_layers=layers,
        memory_slots=N,
        memory_width=M,
        read_heads=R,
        write_heads=W,
        shift_range=(n_shifts - 1) // 2,
        memory_init="random",
        initial_weights="zero",  # pytorch-ntm starts every sequence from all-zero weightings
        head_activation="pytorch-ntm-2017",
    )

    def cat_heads(kind: str, part: str) -> Tensor:
        return torch.cat([sd[f"ntm.heads.{i}.fc_{kind}.{part}"] for i, k in heads if k == kind], dim=0)

    ours = {
        "controller.h0": sd["ntm.controller.lstm_h_bias"].reshape(layers, H),
        "controller.c0": sd["ntm.controller.lstm_c_bias"].reshape(layers, H),
        "read_init": torch.cat([sd[f"ntm.read{i}_bias"].reshape(1, M) for i in range(R)]),
        "memory_bias": mem,
        "read_head.weight": cat_heads("read", "weight"),
        "read_head.bias": cat_heads("read", "bias"),
        "fc.weight": sd["ntm.fc.weight"],
        "fc.bias": sd["ntm.fc.bias"],
    }
    ours["write_head.weight"] = cat_heads("write", "weight")
    ours["write_head.bias"] = cat_heads("write", "bias")
    for k, v in sd.items():
        if k.startswith("ntm.controller.lstm."):
            ours["controller.lstm." + k.removeprefix("ntm.controller.lstm.")] = v

    model = NTM(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
           for k, v in ours.items() if k in expected and v.shape != expected[k].shape]
    if missing or bad or set(ours) - set(expected):
        raise ValueError(f"pytorch-ntm checkpoint does not fit an NTM with {asdict(config)}: "
                         f"missing {missing}, shape mismatches {bad}, extra {sorted(set(ours) - set(expected))}")
    model.load_state_dict({k: v.detach().to(torch.float32).clone() for k, v in ours.items()})
    model.eval()

    bits = config.output_size
    if config.input_size != bits + 1:
        raise ValueError(f"input size {config.input_size} and output size {bits} are not the copy task's "
                         "(input = bits + delimiter channel); only copy-task checkpoints are supported")
    meta = {
        "arch": "ntm",
        "config": asdict(config),
        "task": {"name": "copy", "params": {"bits": bits, **COPY_PARAMS}},
        "step": int(step),
        "metrics": {},
        "source": SOURCE,
    }
    return model, meta


def _unwrap(obj):
    """Accept the state_dict itself or a dict holding it under a usual key."""
    if isinstance(obj, dict) and not looks_like_pytorch_ntm(obj.keys()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def import_file(path: str | Path) -> tuple[NTM, dict]:
    """Read a pytorch-ntm `.model` file safely and convert it. ValueError if it isn't one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch's own message recommends weights_only=False, the one thing never to do here
        found = re.search(r"Unsupported [^\n]*?(?= was not|\.|$)", str(exc), re.M)
        detail = f" ({found.group(0)})" if found else ""
        raise ValueError(f"{path.name} is not a pytorch-ntm checkpoint: refused to unpickle it{detail}; it is "
                         "not a PyTorch file, or it holds objects other than tensors, and only plain "
                         "state_dicts are read (weights_only=True), never code") from exc
    except Exception as exc:  # zip, truncation and format errors all mean "not such a checkpoint"
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{path.name} is not a pytorch-ntm checkpoint: torch.load(weights_only=True) "
                         f"failed ({type(exc).__name__}: {first})") from exc
    sd = _unwrap(obj)
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path.name} is not a pytorch-ntm checkpoint: it holds a {type(sd).__name__}, "
                         "not a state_dict of tensors")
    m = re.search(r"batch-(\d+)", path.name)
    return convert_state_dict(dict(sd), step=int(m.group(1)) if m else PUBLISHED_STEP)
