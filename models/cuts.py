"""Paths cut by construction, for control models whose truth is known (models/controls.py).

A model config's `cut` multiplies a path's contribution by zero inside the architecture,
after the path's analysis sites, so the cut holds for every forward pass: in training,
and whenever the checkpoint (which stores the config) is loaded and analysed. A model
trained with its reads zeroed by a training-time ablation would still have random
weights reading them, and nonzero reads at analysis time would move its outputs; with
the cut in the architecture nothing downstream ever sees the path, whatever its weights.
`analysis/` needs no special case: it ablates the sites as for any model and finds that
removing a cut path moves nothing.

    none    nothing cut (the default: every earlier checkpoint loads unchanged)
    memory  memory's contribution is zero everywhere (NTM/DNC: the reads into the output and
            into the controller; sequence stacks: every memory or ssm block's output):
            memory is decorative by construction, its addressing still runs
    bypass  the bypass's contribution is zero (NTM/DNC: the controller's direct path to the
            output; sequence stacks: every attention block's output): only memory can carry
            information between positions
    sparse  memory reaches the output only at steps t with t % SPARSE_PERIOD == SPARSE_PHASE,
            where the bypass is cut; at every other step the bypass alone reaches it (and
            NTM/DNC reads never enter the controller): memory can decide only those steps
"""
from __future__ import annotations

import torch
from torch import Tensor

CUTS = ("none", "memory", "bypass", "sparse")
SPARSE_PERIOD = 3
SPARSE_PHASE = 0


def check_cut(cut: str) -> None:
    if cut not in CUTS:
        raise ValueError(f"cut must be one of {CUTS}, not {cut!r}")


def gates(cut: str, steps: int, like: Tensor) -> tuple[Tensor, Tensor, bool]:
    """`(memory [T], bypass [T], reads_feed_controller)`: each path's multiplier per step."""
    t = torch.arange(steps, device=like.device)
    one = torch.ones(steps, dtype=like.dtype, device=like.device)
    if cut == "memory":
        return one * 0, one, False
    if cut == "bypass":
        return one, one * 0, True
    if cut == "sparse":
        open_ = (t % SPARSE_PERIOD == SPARSE_PHASE).to(like.dtype)
        return open_, 1 - open_, False
    return one, one, True
