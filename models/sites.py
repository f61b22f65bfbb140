"""The site contract: named places in a model's computation, one value per timestep.

Every architecture declares its sites (`SiteSpec`) and passes each value through
`self.site(name, value, t)` (one timestep, value `[batch, *shape]`) or
`self.site_seq(name, value)` (all timesteps at once, value `[batch, time, *shape]`).
With nothing attached these calls return the value untouched. Inside `hooks(...)`
they record chosen sites into a `Trace` and apply `Intervention`s, then detach, even
when the forward pass raises (the TransformerLens HookPoint idea, scoped).

    with hooks(model, record=["memory.read"],
               interventions=[Intervention("memory.read", 0.0, steps=[5], rows=[1])]) as trace:
        logits = model(inputs)              # [B, T, out]
    trace["memory.read"]                    # [B, T, heads, feature]

Interventions on different batch rows are compiled into one `where` per site and
step, so N interventions run as N rows of one batch at the cost of one forward pass.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence, Union

import torch
from torch import Tensor

from .glob import compile_glob

SiteKind = Literal[
    "read",  # what memory returns to the network (memory.read, ssm.read)
    "read_weights",  # distribution over slots used to read
    "write_weights",  # distribution over slots used to write
    "write",  # what is written (erase/add vectors, keys and values)
    "state",  # memory contents or recurrent state
    "bypass",  # the path around memory (controller output, residual branch, D skip)
    "attention",  # attention-like distribution over earlier timesteps
    "gate",  # scalar or vector gates (decay, read modes, SSM gate)
    "output",  # the model's output logits
]
SITE_KINDS: tuple[str, ...] = SiteKind.__args__  # type: ignore[attr-defined]
MEMORY_KINDS = ("read", "read_weights", "write_weights", "write", "state", "attention")

# What a site is to the reliance analysis's factorial design (analysis/reliance.py): the
# components it removes are declared here, per site, by the model that knows its wiring.
SiteRole = Literal[
    "memory",  # memory's whole contribution to the rest of the network (the "memory removed" ablation)
    "bypass",  # a path parallel to memory from the input to the output (controller.output, local attention)
    "state",  # the controller's own recurrent state: memory's other competitor, also what addresses memory
    "series",  # a path in series after memory (an MLP reading the residual stream): neither memory nor bypass
]
SITE_ROLES: tuple[str, ...] = SiteRole.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SiteSpec:
    """One named site. `shape`/`axes` describe a single timestep of one batch row;
    a `None` in `shape` means "as long as the sequence" (attention over keys).

    on_request: large or costly sites (the full memory matrix, the DNC link matrix, the
        linear-memory state) are left out of `record="*"` and computed only when a
        caller names them.
    distribution: the values along the last axis are non-negative and sum to one, so
        entropy and utilisation apply.
    memory: whether the site lies on the memory path. Defaults to `kind in MEMORY_KINDS`;
        local (sliding-window) attention sets it False: its pattern has kind "attention"
        like a memory layer's implicit attention, but it is the competitor, not memory.
    role: the component this site stands for in the reliance analysis (`SITE_ROLES`), or
        None for a site inside a component (a head's weights, a layer's inner read that
        its block output already carries): every component is removed through the sites
        of its role, each value counted once.
    """

    name: str
    kind: str
    shape: tuple[int | None, ...]
    axes: tuple[str, ...]
    on_request: bool = False
    distribution: bool = False
    doc: str = ""
    memory: bool | None = None
    role: str | None = None

    def __post_init__(self) -> None:
        if self.memory is None:
            object.__setattr__(self, "memory", self.kind in MEMORY_KINDS)
        if self.kind not in SITE_KINDS:
            raise ValueError(f"site {self.name!r}: unknown kind {self.kind!r}; known kinds: {SITE_KINDS}")
        if self.role is not None and self.role not in SITE_ROLES:
            raise ValueError(f"site {self.name!r}: unknown role {self.role!r}; known roles: {SITE_ROLES}")
        if len(self.shape) != len(self.axes):
            raise ValueError(f"site {self.name!r}: shape {self.shape} and axes {self.axes} differ in length")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "axes": list(self.axes),
            "on_request": self.on_request,
            "distribution": self.distribution,
            "memory": self.memory,
            "role": self.role,
            "doc": self.doc,
        }


Replacement = Union[float, int, Tensor, Callable[[Tensor, int], Tensor]]

# Everything a recurrence carries from one step into the next (controller h/c, memory, the
# previous weightings and reads, a linear memory's matrix, a conv buffer), by name; every
# tensor is batch-first `[B, ...]`, so states of runs can be tiled and concatenated by rows.
State = dict[str, Tensor]


@dataclass
class Intervention:
    """Replace or transform one site's value.

    value: a number (fill), a tensor broadcastable to `[batch, time, *shape]` (so
        `[1, T, *shape]` is a per-timestep mean and `[B, T, *shape]` a full
        replacement), or a function `f(value_t [B, *shape], t) -> [B, *shape]`.
    steps: timesteps to touch (None = all).
    rows: batch rows to touch (None = all), as indices or a bool mask.
    elements: bool mask broadcastable to the per-step shape (e.g. only slot 3, only
        head 0); None = every element.
    """

    site: str
    value: Replacement
    steps: Sequence[int] | None = None
    rows: Sequence[int] | Tensor | None = None
    elements: Tensor | None = None


def _check_in_range(site: str, field: str, indices, size: int, what: str) -> None:
    if indices is None:
        return
    values = indices.tolist() if isinstance(indices, Tensor) else list(indices)
    bad = [int(i) for i in values if not 0 <= int(i) < size]
    if bad:
        raise ValueError(f"intervention on {site!r}: {field} {bad[:8]} out of range; this run has {size} "
                         f"{what}s (0 to {size - 1})")


class Trace:
    """Recorded site values, looked up by name: `trace["memory.read"]` is `[B, T, *shape]`.

    With `keep_grad=True` the values stay in the autograd graph; `trace.parts(name)`
    gives the tensors that were actually used (one per step for step-wise sites), which
    is what `torch.autograd.grad` must be asked about.
    """

    def __init__(self, specs: dict[str, SiteSpec]):
        self.specs = specs
        self._steps: dict[str, dict[int, Tensor]] = {}
        self._seqs: dict[str, Tensor] = {}

    def _add_step(self, name: str, t: int, value: Tensor) -> None:
        self._steps.setdefault(name, {})[t] = value

    def _add_seq(self, name: str, value: Tensor) -> None:
        self._seqs[name] = value

    def names(self) -> list[str]:
        return sorted(set(self._steps) | set(self._seqs))

    def __contains__(self, name: str) -> bool:
        return name in self._steps or name in self._seqs

    def parts(self, name: str) -> list[Tensor]:
        if name in self._seqs:
            return [self._seqs[name]]
        steps = self._steps[name]
        return [steps[t] for t in sorted(steps)]

    def __getitem__(self, name: str) -> Tensor:
        if name in self._seqs:
            return self._seqs[name]
        if name not in self._steps:
            raise KeyError(f"site {name!r} was not recorded; recorded: {self.names()}")
        steps = self._steps[name]
        values = [steps[t] for t in sorted(steps)]
        if values and any(v.shape != values[0].shape for v in values):
            # attention over keys grows with t: pad to the longest with zeros
            width = max(v.shape[-1] for v in values)
            values = [torch.nn.functional.pad(v, (0, width - v.shape[-1])) for v in values]
        return torch.stack(values, dim=1)

    def items(self) -> Iterator[tuple[str, Tensor]]:
        for name in self.names():
            yield name, self[name]


@dataclass
class _Compiled:
    """All static interventions of one site merged into one replacement and mask."""

    replacement: Tensor  # [B, T, *shape]
    mask: Tensor  # [B, T, *shape] bool
    active_steps: set[int]


@dataclass
class SiteBus:
    """What a model's `site()` calls talk to. Empty (detached) unless inside `hooks`."""

    specs: dict[str, SiteSpec]
    record: set[str] = field(default_factory=set)
    interventions: dict[str, list[Intervention]] = field(default_factory=dict)
    keep_grad: bool = False
    trace: Trace | None = None
    batch: int = 0
    steps: int = 0
    _compiled: dict[str, _Compiled | None] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        return name in self.record or name in self.interventions

    # -- called by the model ------------------------------------------------------------
    def begin(self, batch: int, steps: int) -> None:
        self.batch, self.steps = batch, steps
        self._compiled = {}
        # An intervention aimed past the sequence or the batch would silently do nothing;
        # say so instead (the REST routes refuse the same requests with a 422).
        for name, interventions in self.interventions.items():
            for iv in interventions:
                _check_in_range(name, "steps", iv.steps, steps, "timestep")
                if iv.rows is not None and not (isinstance(iv.rows, Tensor) and iv.rows.dtype == torch.bool):
                    _check_in_range(name, "rows", iv.rows, batch, "batch row")

    def step(self, name: str, value: Tensor, t: int) -> Tensor:
        if name in self.interventions:
            value = self._intervene_step(name, value, t)
        if name in self.record and self.trace is not None:
            self.trace._add_step(name, t, value if self.keep_grad else value.detach())
        return value

    def seq(self, name: str, value: Tensor) -> Tensor:
        if name in self.interventions:
            value = self._intervene_seq(name, value)
        if name in self.record and self.trace is not None:
            self.trace._add_seq(name, value if self.keep_grad else value.detach())
        return value

    # -- interventions --------------------------------------------------------------------
    def _static(self, name: str) -> list[Intervention]:
        return [iv for iv in self.interventions[name] if not callable(iv.value)]

    def _compile(self, name: str, step_shape: torch.Size, like: Tensor) -> _Compiled | None:
        if name in self._compiled:
            return self._compiled[name]
        static = self._static(name)
        compiled = None
        if static:
            B, T = self.batch, self.steps
            full = (B, T, *step_shape)
            replacement = torch.zeros(full, dtype=like.dtype, device=like.device)
            mask = torch.zeros(full, dtype=torch.bool, device=like.device)
            active: set[int] = set()
            for iv in static:
                m = _intervention_mask(iv, B, T, step_shape, like.device)
                value = iv.value
                if not isinstance(value, Tensor):
                    value = torch.tensor(float(value), dtype=like.dtype, device=like.device)
                value = torch.broadcast_to(value.to(device=like.device, dtype=like.dtype), full)
                replacement = torch.where(m, value, replacement)
                mask |= m
                active.update(range(T) if iv.steps is None else (int(s) for s in iv.steps))
            compiled = _Compiled(replacement, mask, active)
        self._compiled[name] = compiled
        return compiled

    def _intervene_step(self, name: str, value: Tensor, t: int) -> Tensor:
        compiled = self._compile(name, value.shape[1:], value)
        if compiled is not None and t in compiled.active_steps:
            value = torch.where(compiled.mask[:, t], compiled.replacement[:, t], value)
        for iv in self.interventions[name]:
            if callable(iv.value) and (iv.steps is None or t in iv.steps):
                new = iv.value(value, t)
                m = _intervention_mask(iv, value.shape[0], 1, value.shape[1:], value.device)[:, 0]
                value = torch.where(m, new, value)
        return value

    def _intervene_seq(self, name: str, value: Tensor) -> Tensor:
        compiled = self._compile(name, value.shape[2:], value)
        if compiled is not None:
            value = torch.where(compiled.mask, compiled.replacement, value)
        for iv in self.interventions[name]:
            if callable(iv.value):
                steps = range(value.shape[1]) if iv.steps is None else iv.steps
                new = torch.stack([iv.value(value[:, t], t) if t in steps else value[:, t]
                                   for t in range(value.shape[1])], dim=1)
                m = _intervention_mask(iv, value.shape[0], value.shape[1], value.shape[2:], value.device)
                value = torch.where(m, new, value)
        return value


def _intervention_mask(iv: Intervention, B: int, T: int, step_shape, device) -> Tensor:
    """Bool mask `[B, T, *step_shape]` of the elements an intervention touches."""
    rows = torch.ones(B, dtype=torch.bool, device=device)
    if iv.rows is not None:
        if isinstance(iv.rows, Tensor) and iv.rows.dtype == torch.bool:
            rows = iv.rows.to(device)
        else:
            rows = torch.zeros(B, dtype=torch.bool, device=device)
            rows[torch.as_tensor(list(iv.rows), dtype=torch.long, device=device)] = True
    steps = torch.ones(T, dtype=torch.bool, device=device)
    if iv.steps is not None and T > 1:
        steps = torch.zeros(T, dtype=torch.bool, device=device)
        idx = [int(s) for s in iv.steps if 0 <= int(s) < T]
        steps[idx] = True
    m = rows[:, None] & steps[None, :]
    m = m.reshape(B, T, *([1] * len(step_shape)))
    if iv.elements is not None:
        m = m & iv.elements.to(device=device, dtype=torch.bool)
    return torch.broadcast_to(m, (B, T, *step_shape))


class SiteModel(torch.nn.Module):
    """Base class of every architecture.

    Subclasses set `arch` (registry name) and `Config` (a dataclass), build their layers
    in `__init__(config)`, declare `site_specs()`, and implement `compute(x)` mapping
    `[B, T, input_size]` floats (or `[B, T]` token ids for models with `vocab_size`) to
    logits `[B, T, output_size]`, routing values through `self.site`/`self.site_seq`.
    `component_groups()` names which parameters form the memory path and which the
    bypass, for gradient-flow analysis.
    """

    arch: str = ""
    Config: type = object

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self._bus: SiteBus | None = None

    # -- contract -----------------------------------------------------------------------
    def site_specs(self) -> dict[str, SiteSpec]:
        raise NotImplementedError

    def compute(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def component_groups(self) -> dict[str, list[str]]:
        """{"memory": [param name prefixes], "bypass": [...], ...}."""
        raise NotImplementedError

    # -- used by subclasses ---------------------------------------------------------------
    def site(self, name: str, value: Tensor, t: int) -> Tensor:
        bus = self._bus
        return value if bus is None else bus.step(name, value, t)

    def site_seq(self, name: str, value: Tensor) -> Tensor:
        bus = self._bus
        return value if bus is None else bus.seq(name, value)

    def wants(self, name: str) -> bool:
        """True when an on-request site is being recorded or intervened on."""
        return self._bus is not None and self._bus.wants(name)

    def intervenes(self, name: str) -> bool:
        return self._bus is not None and name in self._bus.interventions

    def scope(self, prefix: str) -> "SiteScope":
        """Site calls for a sub-layer, its names prefixed (`layers.2.` + `memory.read`)."""
        return SiteScope(self, prefix)

    # -- optional: resuming the recurrence from a saved state -----------------------------------
    # A model whose computation is a recurrence over timesteps can expose it one step at a
    # time: `initial_state(x)` is the state entering step 0, `step(x_t, state, t)` computes
    # step t (its site calls use the absolute step t) and returns the logits and the state
    # entering t + 1. Exact patching then computes a run's prefix once and resumes every
    # patch at t from the state entering t (analysis/prefix.py). Models without it keep
    # `supports_resume` False and are patched by full forward passes.
    @property
    def supports_resume(self) -> bool:
        return False

    def initial_state(self, x: Tensor) -> State:
        """The state entering step 0, for prepared inputs `x` `[B, T, ...]`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be resumed step by step")

    def step(self, x_t: Tensor, state: State, t: int) -> tuple[Tensor, State]:
        """Timestep t: `x_t` `[B, ...]` -> (logits `[B, out]`, the state entering t + 1)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be resumed step by step")

    def compute_steps(self, x: Tensor) -> Tensor:
        """`compute` as the plain loop over `step`, for models whose forward pass is that loop."""
        state = self.initial_state(x)
        outs = []
        for t in range(x.shape[1]):
            logits, state = self.step(x[:, t], state, t)
            outs.append(logits)
        return torch.stack(outs, dim=1)

    def run_steps(self, x: Tensor, state: State | None = None, start: int = 0, stop: int | None = None,
                  keep_states: bool = False) -> tuple[Tensor, State, list[State]]:
        """Steps start..stop-1 of inputs `x` `[B, T, ...]` (the whole sequence, so that steps and
        interventions keep their absolute indices), from `state`, the state entering `start`
        (None: the initial state, with start 0). Returns the logits `[B, stop - start, out]`,
        the state entering `stop`, and with `keep_states` the state entering each step run.
        Attached hooks see the run as a forward pass (the `output` site included)."""
        x = self.prepare_input(x)
        stop = x.shape[1] if stop is None else stop
        if not 0 <= start <= stop <= x.shape[1]:
            raise ValueError(f"steps {start}..{stop} are outside this run's {x.shape[1]} steps")
        if state is None:
            if start:
                raise ValueError("resuming at a step after 0 needs the state entering it")
            state = self.initial_state(x)
        self.begin_run(x.shape[0], x.shape[1])
        outs, states = [], []
        for t in range(start, stop):
            if keep_states:
                states.append(state)
            logits, state = self.step(x[:, t], state, t)
            outs.append(self.site("output", logits, t))
        logits = torch.stack(outs, dim=1) if outs else x.new_zeros(x.shape[0], 0, self.config.output_size)
        return logits, state, states

    # -- public ---------------------------------------------------------------------------
    def begin_run(self, batch: int, steps: int) -> None:
        """Tell the attached hooks a run of `batch` rows and `steps` timesteps starts."""
        if self._bus is not None:
            self._bus.begin(batch, steps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepare_input(x)
        self.begin_run(x.shape[0], x.shape[1])
        logits = self.compute(x)
        return self.site_seq("output", logits)

    def prepare_input(self, x: Tensor) -> Tensor:
        """Token ids become one-hot vectors for models that take continuous input."""
        if not x.is_floating_point() and getattr(self.config, "vocab_size", None) is None:
            x = torch.nn.functional.one_hot(x.long(), self.config.input_size).float()
        return x

    def config_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self.config)


class SiteScope:
    """What a layer inside a stacked model uses in place of the model's own site calls.
    Layers are plain `nn.Module`s; they take a scope argument and call
    `scope.seq("memory.read", o)`, which becomes the model's `layers.<i>.memory.read`."""

    def __init__(self, model: SiteModel, prefix: str):
        self.model = model
        self.prefix = prefix.rstrip(".") + "." if prefix else ""

    def name(self, name: str) -> str:
        return self.prefix + name

    def step(self, name: str, value: Tensor, t: int) -> Tensor:
        return self.model.site(self.prefix + name, value, t)

    def seq(self, name: str, value: Tensor) -> Tensor:
        return self.model.site_seq(self.prefix + name, value)

    def wants(self, name: str) -> bool:
        return self.model.wants(self.prefix + name)

    def intervenes(self, name: str) -> bool:
        return self.model.intervenes(self.prefix + name)


def prefixed(prefix: str, specs: list[SiteSpec]) -> list[SiteSpec]:
    """Layer-local specs renamed under a prefix, e.g. for `layers.2.`."""
    from dataclasses import replace

    p = prefix.rstrip(".") + "." if prefix else ""
    return [replace(s, name=p + s.name) for s in specs]


def controller_state_spec(layers: int, hidden: int) -> SiteSpec:
    """The recurrent state (h, c per layer) an LSTM controller starts step t from: what it
    carries over from earlier steps, memory's main competitor. Intervening at t changes
    step t and everything after it; the output path and the heads see the changed state."""
    return SiteSpec("controller.state", "state", (layers, 2, hidden), ("layer", "h_c", "feature"), memory=False,
                    role="state", doc="controller LSTM state (h, c per layer; h_c 0 = h, 1 = c) entering step t")


def state_site(owner: "SiteModel", t: int, h: Tensor, c: Tensor, layer_first: bool) -> tuple[Tensor, Tensor]:
    """Route an LSTM state through `controller.state` at step t; `h`, `c` are
    `[layers, B, H]` (layer_first, as nn.LSTM) or `[B, H]` (one LSTMCell). Free when
    nothing is attached to the site."""
    if not owner.wants("controller.state"):
        return h, c
    if not layer_first:
        h, c = h.unsqueeze(0), c.unsqueeze(0)
    v = owner.site("controller.state", torch.stack([h, c], dim=2).transpose(0, 1), t)  # [B, L, 2, H]
    h, c = v[:, :, 0].transpose(0, 1).contiguous(), v[:, :, 1].transpose(0, 1).contiguous()
    return (h, c) if layer_first else (h[0], c[0])


def output_spec(output_size: int) -> SiteSpec:
    return SiteSpec("output", "output", (output_size,), ("feature",), doc="output logits")


def resolve_sites(specs: dict[str, SiteSpec], patterns: Sequence[str] | str | None) -> set[str]:
    """Names matching `patterns`. "*" and globs ("memory.*") skip on-request sites;
    an exact name always counts. Unknown names raise a ValueError that lists the sites,
    and so does a pattern that is too long or has an unclosed `[` (see `glob`)."""
    if patterns is None:
        return set()
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen: set[str] = set()
    for p in patterns:
        glob = compile_glob(p)  # checks the length before anything else looks at it
        if p in specs:
            chosen.add(p)
            continue
        matched = {n for n, s in specs.items() if not s.on_request and glob.matches(n)}
        if not matched:
            raise ValueError(f"no site matches {p!r}; this model has: {sorted(specs)}")
        chosen |= matched
    return chosen


@contextmanager
def hooks(
    model: SiteModel,
    record: Sequence[str] | str | None = None,
    interventions: Sequence[Intervention] = (),
    keep_grad: bool = False,
) -> Iterator[Trace]:
    """Attach recording and interventions for the duration of the block; always detach."""
    if model._bus is not None:
        raise RuntimeError("hooks are already attached to this model; nesting is not supported")
    specs = model.site_specs()
    names = resolve_sites(specs, record)
    by_site: dict[str, list[Intervention]] = {}
    for iv in interventions:
        if iv.site not in specs:
            raise ValueError(f"cannot intervene on unknown site {iv.site!r}; this model has: {sorted(specs)}")
        by_site.setdefault(iv.site, []).append(iv)
    trace = Trace({n: specs[n] for n in names})
    model._bus = SiteBus(specs=specs, record=names, interventions=by_site, keep_grad=keep_grad, trace=trace)
    try:
        yield trace
    finally:
        model._bus = None


def run_with_sites(
    model: SiteModel,
    x: Tensor,
    record: Sequence[str] | str | None = None,
    interventions: Sequence[Intervention] = (),
    keep_grad: bool = False,
) -> tuple[Tensor, Trace]:
    """One forward pass with recording/interventions: returns (logits, trace)."""
    with hooks(model, record, interventions, keep_grad) as trace:
        logits = model(x)
    return logits, trace
