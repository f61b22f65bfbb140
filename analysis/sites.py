"""Choosing sites by what they are (their `SiteSpec.kind`), never by architecture.

Every analysis asks questions like "all the memory reads", "the bypass", "every weight
distribution"; the answers come from the site specs each model declares, so a new
architecture is analysed as soon as it declares its sites.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from ..models.sites import SiteModel, SiteSpec, resolve_sites


def specs(model: SiteModel) -> dict[str, SiteSpec]:
    return model.site_specs()


def sites_of_kind(model: SiteModel, *kinds: str, on_request: bool = False) -> list[str]:
    """Names of the sites of these kinds, in declaration order (layer order for stacks).
    On-request sites (full memory matrices, attention patterns) only with `on_request`."""
    return [n for n, s in specs(model).items() if s.kind in kinds and (on_request or not s.on_request)]


def sites_of_role(model: SiteModel, role: str) -> list[str]:
    """Names of the sites a model declares for one component (`SiteSpec.role`: memory,
    bypass, state, series), in declaration order. Removing a component means ablating
    exactly these sites; each value is counted once (inner sites have no role)."""
    return [n for n, s in specs(model).items() if s.role == role]


def components(model: SiteModel) -> dict[str, list[str]]:
    """{"memory": [...], "bypass": [...], "state": [...]}: the sites of each component the
    reliance design removes; a component the model does not have is an empty list."""
    return {role: sites_of_role(model, role) for role in ("memory", "bypass", "state")}


def read_sites(model: SiteModel) -> list[str]:
    """What memory returns to the network, each value once (role "memory"): the sites a
    reliance ablation removes. A layer's inner read that its block output already
    carries is left out; `sites_of_kind(model, "read")` lists every read site."""
    return sites_of_role(model, "memory")


def bypass_sites(model: SiteModel) -> list[str]:
    """The paths parallel to memory (role "bypass": a controller's direct path to the
    output, local attention, the SSM's D skip). Paths in series after memory (an MLP
    reading the residual stream) and the residual stream itself are not bypass."""
    return sites_of_role(model, "bypass")


def memory_sites(model: SiteModel) -> list[str]:
    """Every always-recorded site on the memory path (reads, weights, writes, states, a
    memory layer's implicit attention; `SiteSpec.memory` leaves local attention out)."""
    return [n for n, s in specs(model).items() if s.memory and not s.on_request]


def distribution_sites(model: SiteModel) -> list[str]:
    """Sites whose last axis is a probability distribution, on-request ones included
    (attention patterns are usually on request)."""
    return [n for n, s in specs(model).items() if s.distribution]


def slot_weight_sites(model: SiteModel) -> list[str]:
    """Read/write weightings over slots: distributions of kind read_weights/write_weights."""
    return [n for n, s in specs(model).items()
            if s.kind in ("read_weights", "write_weights") and s.distribution]


def check_sites(model: SiteModel, names: Iterable[str]) -> list[str]:
    """Expand globs and check names; unknown names raise a ValueError listing the sites.
    Keeps the caller's order (a glob's matches in declaration order) and drops duplicates."""
    all_specs = specs(model)
    out: list[str] = []
    for pattern in names:
        matched = resolve_sites(all_specs, [pattern])
        out += [n for n in all_specs if n in matched and n not in out]
    return out


def step_size(spec: SiteSpec, steps: int) -> tuple[int, ...]:
    """The per-step shape with variable-length axes (`None`: attention over keys) at their
    longest, `steps`."""
    return tuple(steps if n is None else n for n in spec.shape)


def element_mask(spec: SiteSpec, elements: dict[str, Sequence[int]] | None) -> Tensor | None:
    """Bool mask broadcastable to one step of the site, True on the chosen elements.

    elements: axis name -> indices, e.g. {"slot": [3, 4]} or {"head": [0]}; axes not named
    are taken whole. An axis the site does not have is an error (the message lists the
    axes it has), as is an index out of range or a choice along a variable-length axis.
    """
    if not elements:
        return None
    shape = []
    for axis in elements:
        if axis not in spec.axes:
            raise ValueError(f"site {spec.name!r} has no axis {axis!r}; its axes are {list(spec.axes)}")
    for axis, size in zip(spec.axes, spec.shape):
        if axis in elements and size is None:
            raise ValueError(f"site {spec.name!r}: axis {axis!r} grows with the sequence; choose elements "
                             "along a fixed-size axis")
        shape.append(1 if axis not in elements else size)
    mask = torch.ones(shape, dtype=torch.bool)
    for i, (axis, size) in enumerate(zip(spec.axes, spec.shape)):
        if axis not in elements:
            continue
        idx = [int(j) for j in elements[axis]]
        if not idx:
            raise ValueError(f"site {spec.name!r}: empty index list for axis {axis!r}")
        bad = [j for j in idx if not 0 <= j < size]
        if bad:
            raise ValueError(f"site {spec.name!r}: indices {bad} out of range for axis {axis!r} of size {size}")
        sel = torch.zeros(size, dtype=torch.bool)
        sel[idx] = True
        view = [1] * len(shape)
        view[i] = size
        mask = mask & sel.view(view)
    return mask


@contextlib.contextmanager
def evaluating(model: SiteModel) -> Iterator[SiteModel]:
    """Eval mode (no dropout, no training-only bypass dropout) for the block, restored after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def model_device(model: SiteModel) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def check_compatible(model: SiteModel, task) -> None:
    """A clear error when the model's input/output sizes do not fit the task's."""
    cfg = model.config
    for name in ("input_size", "output_size"):
        want = getattr(task, name, None)
        have = getattr(cfg, name, None)
        if want is None or have is None:
            continue
        if name == "input_size" and getattr(cfg, "vocab_size", None) is not None:
            continue  # embedding models take token ids; vocab size is checked below
        if int(have) != int(want):
            raise ValueError(f"model {model.arch!r} has {name}={have} but task {task.name!r} needs {want}")
    vocab = getattr(cfg, "vocab_size", None)
    if vocab is not None and task.vocab_size is not None and int(vocab) < int(task.vocab_size):
        raise ValueError(f"model {model.arch!r} has vocab_size={vocab} but task {task.name!r} uses {task.vocab_size} token ids")
