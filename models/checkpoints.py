"""Self-describing checkpoints: one `.safetensors` file holds the weights and everything
needed to rebuild the model (architecture, config, task, step, metrics).

    save_checkpoint("runs/ntm/final.safetensors", model, task=task.spec(), step=5000,
                    metrics={"wrong_bits": 0.0})
    ckpt = load_checkpoint("runs/ntm/final.safetensors")   # ckpt.model is in eval mode
    inspect_checkpoint(path)                                # metadata only, no model built

Safetensors metadata is a str -> str map, so every field is stored JSON-encoded under
its own key (`format`, `format_version`, `arch`, `config`, `task`, `step`, `metrics`,
`name`, `created_at`, `extra`).

Files come from strangers (uploads to the server), so loading never runs code from the
file: safetensors holds no code, and `.pt`/`.pth` files go through
`torch.load(weights_only=True)` only. The safetensors header is parsed and checked here
before the safetensors library sees the file, so a header that claims terabytes of
tensors is rejected without allocating anything. Before a byte of weights is read or a
model built, the model is instantiated on the `meta` device (shapes, no data) and every
tensor the file declares is compared with it, and the weights are held to a size cap
(`max_bytes`, default `MAX_MODEL_BYTES`): a 250-byte file whose config asks for a
gigabyte-sized model, or a small zip that inflates to gigabytes, is refused first.
Every problem is a `CheckpointError` (a ValueError) whose message names the file and
what is wrong with it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from .files import TORCH_SUFFIXES, format_from_name, sniff_format, write_atomic
from .jsonable import to_jsonable
from .registry import architecture, make_config
from .sites import SiteModel

FORMAT = "mnemoscope-checkpoint"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # real headers are kilobytes; anything larger is hostile
MAX_MODEL_BYTES = 2**31  # default cap on a checkpoint's weights; callers (the server) pass their own
MAX_BUILD_OPS = 10_000  # tensor operations a model's constructor may run; real configs need hundreds

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
# what a safetensors dtype can be loaded into: floats convert into each other (as
# `load_state_dict` has always done), integers into integers, booleans only into booleans
_DTYPE_KIND = {name: "float" if name.startswith(("F", "BF")) else "bool" if name == "BOOL" else "integer"
               for name in _DTYPE_BYTES}
_META_FIELDS = ("format", "format_version", "arch", "config", "task", "step", "metrics",
                "name", "created_at", "extra")


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; the message says why."""


@dataclass
class CheckpointMeta:
    arch: str
    config: dict
    task: dict = field(default_factory=dict)
    step: int = 0
    metrics: dict = field(default_factory=dict)
    name: str = ""
    created_at: str = ""
    extra: dict | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LoadedCheckpoint:
    model: SiteModel  # eval mode, on the CPU
    meta: CheckpointMeta
    parameters: int
    path: Path | None = None


# -- saving ---------------------------------------------------------------------------------

def save_checkpoint(
    path: str | os.PathLike,
    model: SiteModel,
    *,
    task: Mapping | Any,
    step: int = 0,
    metrics: dict | None = None,
    name: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write `model` and its description to `path` (a `.safetensors` file), atomically:
    readers see the old file or the new one, never half of one. `task` is a task spec
    dict (`task.spec()`); a Task object is accepted too."""
    from safetensors.torch import save as st_save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_checkpoint writes .safetensors files; got {path.name!r}")
    if not isinstance(model, SiteModel) or not model.arch:
        raise ValueError(f"save_checkpoint needs a registered SiteModel, got {type(model).__name__}")
    task_spec = task.spec() if hasattr(task, "spec") else dict(task)
    meta = CheckpointMeta(
        arch=model.arch,
        config=model.config_dict(),
        task=task_spec,
        step=int(step),
        metrics=_json_field("metrics", metrics or {}),
        name=name or f"{model.arch}-{task_spec.get('name', 'task')}",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra=_json_field("extra", extra) if extra is not None else None,
    )
    metadata = {}
    for key, value in meta.to_dict().items():
        try:
            metadata[key] = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint field {key!r} is not JSON-serialisable: {exc}") from exc
    # clone: tensors sharing storage (tied weights, views) cannot go into safetensors
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    data = st_save(tensors, metadata=metadata)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path


def _json_field(key: str, value: Any) -> Any:
    """A free-form field (metrics, extra) as JSON values; an object with no JSON form is
    refused here rather than stored as its repr for good."""
    try:
        return to_jsonable(value, strict=True)
    except TypeError as exc:
        raise ValueError(f"checkpoint field {key!r} is not JSON-serialisable: {exc}") from exc


# -- loading --------------------------------------------------------------------------------

def load_checkpoint(path: str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES) -> LoadedCheckpoint:
    """Rebuild the model stored in `path`, in eval mode on the CPU.

    `.safetensors`: mnemoscope's own format (see the module doc).
    `.pt`/`.pth` (and other torch files): read with `torch.load(weights_only=True)`; either
    a dict with the same fields as the safetensors metadata plus `state_dict`, or a raw
    state dict that an importer recognises (pytorch-ntm).
    `max_bytes`: the most bytes of weights the file may hold and the model may need;
    checked before anything of that size is allocated.
    """
    path = Path(path)
    kind = _file_kind(path)
    if kind == "safetensors":
        header, metadata = _read_safetensors_header(path)
        meta = _meta_from_fields(path, metadata, decode_json=True)
        plan = _plan_model(path, meta, max_bytes)
        _check_layout(path, meta.arch, plan.tensors, _header_tensors(header))
        _check_size(path, "its tensors", sum(_header_bytes(header).values()), max_bytes)
        tensors = _read_safetensors_tensors(path)
        return _build(path, meta, tensors, plan)
    return _load_torch(path, max_bytes)


def inspect_checkpoint(path: str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES) -> CheckpointMeta:
    """The metadata of a checkpoint without building the model or reading the weights
    (torch files have to be unpickled and converted, so they are fully loaded)."""
    path = Path(path)
    if _file_kind(path) == "safetensors":
        _, metadata = _read_safetensors_header(path)
        meta = _meta_from_fields(path, metadata, decode_json=True)
        _check_arch_and_config(path, meta)
        return meta
    return _load_torch(path, max_bytes).meta


def _file_kind(path: Path) -> str:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name}: the file is empty (0 bytes)")
    # the suffix first: a file we name (an upload is renamed after its content) or the user named
    kind = format_from_name(path) or sniff_format(path)
    if kind is not None:
        return kind
    raise CheckpointError(
        f"{path.name}: unknown file type {path.suffix.lower() or '(no suffix)'!r}; expected a .safetensors "
        f"checkpoint or a PyTorch file ({', '.join(TORCH_SUFFIXES)})"
    )


def _read_safetensors_header(path: Path) -> tuple[dict, dict]:
    """The JSON header and its `__metadata__`, after checking that every tensor it
    describes lies inside the file and matches its dtype and shape."""
    size = path.stat().st_size
    name = path.name
    if size < 8:
        raise CheckpointError(f"{name}: truncated safetensors file ({size} bytes; the 8-byte header length alone is missing)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{name}: safetensors header claims {n} bytes (limit {MAX_HEADER_BYTES}); not a valid checkpoint")
        if 8 + n > size:
            raise CheckpointError(f"{name}: truncated safetensors file: header claims {n} bytes but only {size - 8} follow")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{name}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: safetensors header is not a JSON object")

    data_bytes = size - 8 - n
    end_max = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise CheckpointError(f"{name}: tensor {key!r}: header entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPE_BYTES:
            raise CheckpointError(f"{name}: tensor {key!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"{name}: tensor {key!r}: invalid shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise CheckpointError(f"{name}: tensor {key!r}: invalid data_offsets {offsets!r}")
        begin, end = offsets
        if end > data_bytes:
            raise CheckpointError(
                f"{name}: tensor {key!r} claims bytes {begin}..{end} but the file holds only {data_bytes} bytes "
                "of tensor data (truncated or corrupt)"
            )
        expected = _DTYPE_BYTES[dtype] * math.prod(shape)
        if end - begin != expected:
            raise CheckpointError(
                f"{name}: tensor {key!r}: {dtype} {tuple(shape)} needs {expected} bytes but its data_offsets span {end - begin}"
            )
        end_max = max(end_max, end)
    if end_max != data_bytes:
        raise CheckpointError(f"{name}: {data_bytes - end_max} bytes of tensor data belong to no tensor (corrupt file)")

    metadata = header.get("__metadata__")
    if metadata is None:
        raise CheckpointError(
            f"{name}: no metadata: a plain safetensors file of weights, not a mnemoscope checkpoint "
            "(which records arch, config and task); convert it with `mnemoscope import`"
        )
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{name}: __metadata__ must map strings to strings")
    return header, metadata


def _read_safetensors_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - the library's errors vary by version
        raise CheckpointError(f"{path.name}: safetensors could not read the tensors: {exc}") from exc


def _meta_from_fields(path: Path, fields: Mapping[str, Any], *, decode_json: bool) -> CheckpointMeta:
    """Validate metadata (JSON strings from safetensors, or native values from a .pt dict)."""
    name = path.name
    values: dict[str, Any] = {}
    for key in _META_FIELDS:
        if key not in fields:
            continue
        value = fields[key]
        if decode_json:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{name}: metadata field {key!r} is not valid JSON ({exc})") from exc
        values[key] = value

    fmt = values.get("format")
    if fmt != FORMAT:
        if fmt is None:
            raise CheckpointError(f"{name}: metadata has no 'format' field; not a mnemoscope checkpoint")
        raise CheckpointError(f"{name}: metadata format is {fmt!r}, expected {FORMAT!r}")
    version = values.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: checkpoint format version {version!r} is not supported (this mnemoscope reads version {FORMAT_VERSION})"
        )
    for key in ("arch", "config"):
        if key not in values:
            raise CheckpointError(f"{name}: metadata has no {key!r} field")
    expected_types = {"arch": str, "config": dict, "task": dict, "step": int, "metrics": dict,
                      "name": str, "created_at": str, "extra": (dict, type(None))}
    for key, typ in expected_types.items():
        if key in values and (not isinstance(values[key], typ) or isinstance(values[key], bool)):
            want = "object" if typ is dict else getattr(typ, "__name__", "object or null")
            raise CheckpointError(f"{name}: metadata field {key!r} should be {want}, got {values[key]!r:.80}")
    return CheckpointMeta(**values)


def _check_arch_and_config(path: Path, meta: CheckpointMeta):
    try:
        architecture(meta.arch)
        return make_config(meta.arch, meta.config, stored=True)
    except ValueError as exc:  # unknown arch / unknown config keys: messages list the known ones
        raise CheckpointError(f"{path.name}: {exc}") from exc
    except TypeError as exc:
        raise CheckpointError(f"{path.name}: invalid config for {meta.arch!r}: {exc}") from exc


@dataclass
class _ModelPlan:
    """What a checkpoint's model will be, learnt on the meta device: no data allocated."""

    config: Any
    tensors: dict[str, tuple[tuple[int, ...], str]]  # state-dict key -> (shape, dtype kind)
    nbytes: int  # parameters and buffers, persistent or not


def _plan_model(path: Path, meta: CheckpointMeta, max_bytes: int) -> _ModelPlan:
    """Build the model on the meta device to learn its tensors and their size, and refuse
    it when it would not fit `max_bytes`, before the real model or its weights exist."""
    config = _check_arch_and_config(path, meta)
    try:
        with torch.device("meta"), _BuildBudget(MAX_BUILD_OPS):
            model = architecture(meta.arch)(config)
    except _OverBudget:
        raise CheckpointError(
            f"{path.name}: building {meta.arch!r} from config {_short(meta.config)} takes more than "
            f"{MAX_BUILD_OPS} tensor operations; not a model this loader builds"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a bad value (negative size, wrong type) in config
        raise CheckpointError(f"{path.name}: cannot build {meta.arch!r} from config {_short(meta.config)}: {exc}") from exc
    storages = {id(t): t for t in (*model.parameters(), *model.buffers())}  # tied weights count once
    nbytes = sum(t.numel() * t.element_size() for t in storages.values())
    _check_size(path, f"a {meta.arch!r} model with this config", nbytes, max_bytes)
    tensors = {k: (tuple(v.shape), _torch_kind(v.dtype)) for k, v in model.state_dict().items()}
    return _ModelPlan(config, tensors, nbytes)


class _OverBudget(Exception):
    pass


class _BuildBudget(TorchDispatchMode):
    """Counts the tensor operations a model's constructor runs. On the meta device they
    cost no memory, but a config asking for a million layers would still build a million
    modules: this stops it after a bounded amount of work."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.ops = limit, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if self.ops > self.limit:
            raise _OverBudget
        return func(*args, **(kwargs or {}))


def _short(config: Any) -> str:
    text = repr(config)
    return text if len(text) <= 200 else text[:200] + "...}"


def _torch_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point or dtype.is_complex else "integer"


def _header_tensors(header: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v["shape"]), _DTYPE_KIND[v["dtype"]]) for k, v in header.items() if k != "__metadata__"}


def _header_bytes(header: Mapping[str, Any]) -> dict[str, int]:
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def _check_size(path: Path, what: str, nbytes: int, max_bytes: int) -> None:
    if nbytes > max_bytes:
        raise CheckpointError(
            f"{path.name}: {what} holds {nbytes} bytes of weights, more than this loader's limit of {max_bytes} bytes"
        )


def _check_layout(path: Path, arch: str, expected: Mapping[str, tuple[tuple[int, ...], str]],
                  got: Mapping[str, tuple[tuple[int, ...], str]]) -> None:
    """The file's tensors (names, shapes, dtype kinds) against the model's."""
    name = path.name
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_listed(unexpected)}")
        raise CheckpointError(f"{name}: tensors do not match a {arch!r} model with this config: " + "; ".join(parts))
    for key, (shape, kind) in expected.items():
        got_shape, got_kind = got[key]
        if got_shape != shape:
            raise CheckpointError(f"{name}: tensor {key!r} has shape {got_shape}, expected {shape} for this config")
        if got_kind != kind:
            raise CheckpointError(f"{name}: tensor {key!r} holds {got_kind} values, expected {kind} for this config")


def _listed(keys: list[str], limit: int = 20) -> list[str]:
    return keys[:limit] + ([f"... ({len(keys) - limit} more)"] if len(keys) > limit else [])


def _build(path: Path, meta: CheckpointMeta, tensors: Mapping[str, Tensor], plan: _ModelPlan) -> LoadedCheckpoint:
    """The real model, once `plan` (meta device) says the tensors fit it."""
    _check_layout(path, meta.arch, plan.tensors,
                  {k: (tuple(t.shape), _torch_kind(t.dtype)) for k, t in tensors.items()})
    _check_finite(path, tensors)
    try:
        model = architecture(meta.arch)(plan.config)
    except Exception as exc:  # noqa: BLE001 - the meta build passed, but be as clear if this one fails
        raise CheckpointError(f"{path.name}: cannot build {meta.arch!r} from config {_short(meta.config)}: {exc}") from exc
    model.load_state_dict(dict(tensors), strict=True)
    model.eval()
    return LoadedCheckpoint(model, meta, _count_parameters(model), path)


def _check_finite(path: Path, tensors: Mapping[str, Tensor]) -> None:
    for key, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path.name}: tensor {key!r} has {bad} NaN or infinite values")


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- PyTorch files ----------------------------------------------------------------------------

def _check_torch_archive(path: Path, max_bytes: int) -> None:
    """A zip-format PyTorch file (what torch.save writes) lists every member's size in its
    central directory: hold their sum to `max_bytes`, and to the archive's own size, since
    torch.save stores members uncompressed: a 1 MB file that inflates to a gigabyte is
    refused here, before torch.load allocates it. (Legacy pickle streams carry no
    directory; they are bounded by the upload size.)"""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: could not read as a PyTorch file: not a valid zip archive ({exc})") from exc
    _check_size(path, "the archive", declared, max_bytes)
    size = path.stat().st_size
    if declared > size:
        raise CheckpointError(
            f"{path.name}: the archive's members declare {declared} bytes uncompressed but the file has {size}: "
            "compressed, which torch.save never writes (a zip bomb?); save it again with torch.save"
        )


def _load_torch(path: Path, max_bytes: int) -> LoadedCheckpoint:
    import pickle

    _check_torch_archive(path, max_bytes)
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch's own message suggests weights_only=False, the one thing never to do here
        found = re.search(r"Unsupported [^\n]*?(?= was not|\n|$)", str(exc))
        detail = f" ({found.group(0).strip().rstrip('.')})" if found else ""
        if not re.search(r"global|class|reduce|build|function", str(exc), re.IGNORECASE):
            raise CheckpointError(
                f"{path.name}: could not read as a PyTorch file: not a valid weights-only pickle{detail}"
            ) from exc
        raise CheckpointError(
            f"{path.name}: refused to unpickle: the file asks to run code or build objects other "
            f"than tensors and plain containers{detail}. Only weights are loaded, never code."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - corrupt zip, truncated stream, not torch at all
        raise CheckpointError(f"{path.name}: could not read as a PyTorch file: {type(exc).__name__}: {exc}") from exc

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path.name}: a PyTorch file holding {type(obj).__name__}, expected a dict")
    if "state_dict" in obj and ("arch" in obj or "format" in obj):
        fields = {k: v for k, v in obj.items() if k != "state_dict"}
        fields.setdefault("format", FORMAT)  # the dict's own fields say what it is
        fields.setdefault("format_version", FORMAT_VERSION)
        meta = _meta_from_fields(path, fields, decode_json=False)
        sd = obj["state_dict"]
        if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
            raise CheckpointError(f"{path.name}: 'state_dict' must map names to tensors")
        return _build(path, meta, sd, _plan_model(path, meta, max_bytes))

    if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        return _import_state_dict(path, dict(obj))
    raise CheckpointError(
        f"{path.name}: a PyTorch dict with keys {sorted(map(str, obj))[:8]}; expected a mnemoscope "
        "checkpoint dict (arch, config, task, ..., state_dict) or a recognised state dict"
    )


def _import_state_dict(path: Path, sd: dict[str, Tensor]) -> LoadedCheckpoint:
    try:
        from .importers.pytorch_ntm import convert_state_dict, looks_like_pytorch_ntm
    except ImportError:
        looks_like_pytorch_ntm = None
    if looks_like_pytorch_ntm is None or not looks_like_pytorch_ntm(list(sd)):
        keys = sorted(sd)
        shown = keys[:6] + (["..."] if len(keys) > 6 else [])
        raise CheckpointError(
            f"{path.name}: a raw state dict with no architecture or config ({len(keys)} tensors: {shown}); "
            "no importer recognises it. Save a dict with arch, config, task and state_dict, or a "
            ".safetensors checkpoint"
        )
    _check_finite(path, sd)
    try:
        model, info = convert_state_dict(sd)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - the importer's shape/key complaints
        raise CheckpointError(f"{path.name}: pytorch-ntm import failed: {exc}") from exc
    info = dict(info or {})
    known = {f.name for f in dataclasses.fields(CheckpointMeta)}
    extra = {**(info.pop("extra", None) or {}), **{k: v for k, v in info.items() if k not in known}}
    extra.setdefault("imported_from", "pytorch-ntm")
    extra.setdefault("source_file", path.name)
    meta = CheckpointMeta(
        arch=model.arch,
        config=model.config_dict(),
        task=info.get("task", {}) or {},
        step=int(info.get("step", 0) or 0),
        metrics=info.get("metrics", {}) or {},
        name=info.get("name") or path.stem,
        created_at=info.get("created_at", ""),
        extra=to_jsonable(extra),
    )
    model.eval()
    return LoadedCheckpoint(model, meta, _count_parameters(model), path)


__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_MODEL_BYTES",
    "save_checkpoint",
    "load_checkpoint",
    "inspect_checkpoint",
]
