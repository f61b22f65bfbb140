"""LSTM with no external memory: the control a researcher compares memory models against."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .sites import SiteModel, SiteSpec, State, controller_state_spec, output_spec, state_site


@dataclass
class LSTMConfig:
    input_size: int = 9
    output_size: int = 8
    hidden_size: int = 100
    num_layers: int = 1


class LSTM(SiteModel):
    arch = "lstm"
    Config = LSTMConfig

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        sizes = [config.input_size] + [config.hidden_size] * config.num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(a, config.hidden_size) for a in sizes[:-1])
        self.head = nn.Linear(config.hidden_size, config.output_size)

    def site_specs(self) -> dict[str, SiteSpec]:
        H = self.config.hidden_size
        specs = [
            SiteSpec("controller.output", "bypass", (H,), ("feature",), role="bypass",
                     doc="top LSTM hidden state into the output layer"),
            SiteSpec("controller.cell", "state", (H,), ("feature",), doc="top LSTM cell state"),
            controller_state_spec(self.config.num_layers, H),
            output_spec(self.config.output_size),
        ]
        return {s.name: s for s in specs}

    def component_groups(self) -> dict[str, list[str]]:
        return {"controller": ["cells"], "output": ["head"]}

    def compute(self, x: Tensor) -> Tensor:
        return self.compute_steps(x)

    # -- the recurrence, one step at a time (the site contract's resume API) ---------------------
    @property
    def supports_resume(self) -> bool:
        return True

    def initial_state(self, x: Tensor) -> State:
        zeros = x.new_zeros(x.shape[0], self.config.num_layers, self.config.hidden_size)
        return {"h": zeros, "c": zeros}  # [B, layers, H]

    def step(self, x_t: Tensor, state: State, t: int) -> tuple[Tensor, State]:
        hs, cs = state["h"], state["c"]
        if self.wants("controller.state"):
            h_in, c_in = state_site(self, t, hs.transpose(0, 1), cs.transpose(0, 1), layer_first=True)
            hs, cs = h_in.transpose(0, 1), c_in.transpose(0, 1)
        h, new_h, new_c = x_t, [], []  # h: [B, input]
        for i, cell in enumerate(self.cells):
            h, c = cell(h, (hs[:, i], cs[:, i]))
            new_h.append(h)
            new_c.append(c)
        new_c[-1] = self.site("controller.cell", c, t)
        h = self.site("controller.output", h, t)  # [B, H]
        return self.head(h), {"h": torch.stack(new_h, dim=1), "c": torch.stack(new_c, dim=1)}
