"""Prefix reuse: patched runs of a recurrent model resumed from the base run's state.

A patch at step t leaves steps 0..t-1 of the run it patches untouched, so for a model with the
site contract's resume API (`SiteModel.supports_resume`: `initial_state`, `step`) that prefix
need not be recomputed per patch: the base run is computed once, keeping the state entering
every step (every step, not checkpoints every k steps: a state is one row's recurrence, e.g.
an NTM's 128 x 20 memory, so T states of B rows are far smaller than the patched batch), and
each patched run starts at its own step from the state there.

`resumed_runs` runs all such blocks of rows together, as a staircase: one loop over the steps,
where at step s the blocks that start at s join the batch (their rows appended, from the base
state entering s) and run with the others from then on. Every row thus costs only its steps
t..stop-1, and the loop makes one `step` call per timestep, as one batched forward pass does:
small batches of per-t blocks would instead pay the per-call overhead T^2 / 2 times. A block
holds any subset of the pairs, so a patch that changes nothing for some pairs (their source
value equals the base value there) runs only for the others.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torch import Tensor

from ..models.sites import Intervention, SiteModel, State, hooks
from .sites import model_device


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
                 starts: Sequence[int], rows: Sequence[Tensor], steps: int,
                 interventions: Sequence[Intervention] = ()) -> Tensor:
    """Blocks of rows of the base run, block j the runs of the pairs `rows[j]` (indices into the
    base batch) resumed at step `starts[j]` from `states[starts[j]]`, with `interventions`
    (functions of (value, t)). `starts` must not decrease. The rows are laid out block after
    block, which is also where the interventions find them: at step s the batch holds the rows
    of the blocks started by then. Returns logits `[rows, steps, out]` on the CPU; before its
    start a row's are the base run's `base_logits` (`[B, >= steps, out]`), which a causal
    run's prefix equals."""
    starts = [int(s) for s in starts]
    if len(starts) != len(rows) or any(b < a for a, b in zip(starts, starts[1:])):
        raise ValueError("resumed blocks need one row set each and must come in the order of their start steps")
    if starts and not 0 <= starts[-1] < steps <= len(states):
        raise ValueError(f"start steps {starts[0]}..{starts[-1]} do not fit {steps} steps with {len(states)} states")
    device = model_device(model)
    every = torch.cat(list(rows)) if rows else torch.zeros(0, dtype=torch.long)
    out = base_logits[every, :steps].clone()
    if not starts:
        return out
    x = model.prepare_input(inputs.to(device))
    joining: dict[int, list[Tensor]] = {}
    for s, r in zip(starts, rows):
        joining.setdefault(s, []).append(r)
    state: State | None = None
    active = torch.zeros(0, dtype=torch.long)  # the base rows of the batch, in order
    with torch.no_grad(), hooks(model, (), interventions):
        model.begin_run(len(every), x.shape[1])
        for s in range(starts[0], steps):
            if s in joining:
                new_rows = torch.cat(joining[s])
                new = pick_rows(states[s], new_rows.to(device))
                state = new if state is None else cat_states(state, new)
                active = torch.cat([active, new_rows])
            logits, state = model.step(x[active.to(device), s], state, s)
            out[:len(active), s] = model.site("output", logits, s).cpu()
    return out


def pick_rows(state: State, rows: Tensor) -> State:
    """The state's rows `rows` (repeats allowed), in that order."""
    return {name: value[rows] for name, value in state.items()}
