"""LSTM with no external memory: the control a researcher compares memory models against."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .sites import SiteModel, SiteSpec, controller_state_spec, output_spec, state_site


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
        B, T, _ = x.shape
        state = [(x.new_zeros(B, self.config.hidden_size),) * 2 for _ in self.cells]
        outs = []
        for t in range(T):
            if self.wants("controller.state"):
                hs, cs = state_site(self, t, torch.stack([s[0] for s in state]), torch.stack([s[1] for s in state]),
                                    layer_first=True)
                state = list(zip(hs, cs))
            h = x[:, t]  # [B, input]
            for i, cell in enumerate(self.cells):
                h, c = cell(h, state[i])
                state[i] = (h, c)
            c = self.site("controller.cell", c, t)
            state[-1] = (state[-1][0], c)
            h = self.site("controller.output", h, t)  # [B, H]
            outs.append(self.head(h))
        return torch.stack(outs, dim=1)  # [B, T, out]
