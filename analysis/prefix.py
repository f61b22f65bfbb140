"""Prefix reuse: patched runs of a recurrent model resumed from the base run's state.

A patch at step t leaves steps 0..t-1 of the run it patches untouched, so for a model with the
site contract's resume API (`SiteModel.supports_resume`: `initial_state`, `step`) that prefix
need not be recomputed per patch: the base run is computed once, keeping the state entering
every step (every step, not checkpoints every k steps: a state is one row's recurrence, e.g.
an NTM's 128 x 20 memory, so T states of B rows are far smaller than the patched batch), and
each patched run starts at its own step from the state there.

`resumed_runs` runs k such blocks of B rows together, as a staircase: one loop over the steps,
where at step s the blocks that start at s join the batch (their rows appended, from the base
state entering s) and run with the others from then on. Every block thus costs only its steps
t..stop-1, and the loop makes one `step` call per timestep, as one batched forward pass does:
small batches of per-t blocks would instead pay the per-call overhead T^2 / 2 times.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torch import Tensor

from ..models.sites import Intervention, SiteModel, State, hooks
from .runs import tile
from .sites import model_device


def tile_state(state: State, k: int) -> State:
    """k consecutive copies of a state's rows (as `tile` does for inputs)."""
    return {name: tile(value, k) for name, value in state.items()}


def cat_states(first: State, second: State) -> State:
    """The rows of two states, one after the other."""
    return {name: torch.cat([first[name], second[name]]) for name in first}


def base_run(model: SiteModel, inputs: Tensor, steps: int) -> tuple[Tensor, list[State]]:
    """Steps 0..steps-1 of an unpatched run, step by step: logits `[B, steps, out]` (on the CPU)
    and the state entering each step (on the model's device)."""
    with torch.no_grad():
        logits, _, states = model.run_steps(inputs.to(model_device(model)), stop=steps, keep_states=True)
    return logits.cpu(), states


def resumed_runs(model: SiteModel, inputs: Tensor, states: Sequence[State], base_logits: Tensor,
                 starts: Sequence[int], steps: int, interventions: Sequence[Intervention] = ()) -> Tensor:
    """k blocks of B rows (block j: rows j*B..(j+1)*B-1, as `tile` lays them out), block j the base
    run resumed at step `starts[j]` from `states[starts[j]]`, with `interventions` (functions of
    (value, t), which see at step s the rows of the blocks started by then). `starts` must not
    decrease. Returns logits `[k*B, steps, out]` on the CPU; before its start a block's are the
    base run's `base_logits` (`[B, >= steps, out]`), which a causal run's prefix equals."""
    starts = [int(s) for s in starts]
    if any(b < a for a, b in zip(starts, starts[1:])):
        raise ValueError("resumed blocks must come in the order of their start steps")
    if starts and not 0 <= starts[-1] < steps <= len(states):
        raise ValueError(f"start steps {starts[0]}..{starts[-1]} do not fit {steps} steps with {len(states)} states")
    B, k = inputs.shape[0], len(starts)
    out = tile(base_logits[:, :steps], k).clone()
    if not k:
        return out
    x = model.prepare_input(inputs.to(model_device(model)))
    joining = Counter(starts)
    state: State | None = None
    blocks = 0
    with torch.no_grad(), hooks(model, (), interventions):
        model.begin_run(k * B, x.shape[1])
        for s in range(starts[0], steps):
            if joining[s]:
                new = tile_state(states[s], joining[s])
                state = new if state is None else cat_states(state, new)
                blocks += joining[s]
            logits, state = model.step(tile(x[:, s], blocks), state, s)
            out[:blocks * B, s] = model.site("output", logits, s).cpu()
    return out
