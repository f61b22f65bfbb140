"""Remedies for decorative memory: training options that push a network to use its memory.

Each remedy comes from the research on memory-augmented networks; `REMEDIES` lists them with
their source and how to switch them on (`mnemoscope train` has one option per remedy):

    reconstruction   auxiliary loss: a small decoder predicts earlier inputs from the memory
                     reads (Trinh et al. 2018) -- `ReconstructionLoss`, this module
    bypass dropout   drop the controller/residual path into the output with probability p per
                     sequence while training (stochastic depth on the non-memory path) --
                     the architectures' `bypass_dropout` config field
    bypass bottleneck the bypass passes through a stochastic code whose information is penalised
                     (variational information bottleneck, Alemi et al. 2017) -- the
                     architectures' `bypass_bottleneck` config field (beta), models/bottleneck.py
    small controller a controller too small to hold the sequence itself (Santoro et al. 2016,
                     "hamstringing" the controller) -- `controller_size`
    curriculum       short sequences first on a linear schedule, or an Exp3.S bandit choosing
                     the difficulty that maximises learning progress (Graves et al. 2017) --
                     `TrainConfig(curriculum="linear" | "bandit")`, models/curriculum.py
    NTM stabilisers  constant 1e-6 memory init, gradients clipped to [-10, 10] (Collier & Beel
                     2018) -- NTM `memory_init="constant"`, `TrainConfig(clip=10)`
    DNC fixes        masked content look-up, de-allocation, link sharpness (Csordás &
                     Schmidhuber 2019) -- DNC `masking`, `deallocation`, `sharpness`
    short window     hybrids with short local-attention windows have to train their memory
                     (SWAX, Cabannes et al. 2025) -- sequence `window`
    expert choice    slots that choose the tokens they store (Zhou et al. 2022), or token choice
                     with loss-free balancing (Wang et al. 2024) -- sequence `slot_memory` block,
                     `routing`, `balance_bias_rate` (models/slot_memory.py)

    loss = reconstruction_loss(model, task, horizon=6, weight=1.0)
    train(model, task, TrainConfig(steps=2000), extra_loss=loss, record=loss.sites)

The reconstruction loss works on every architecture through the site contract: it reads the
sites of kind "read" (what memory hands the network), so it needs nothing per architecture.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sites import SiteModel, Trace
from .tasks.base import Batch, Task


@dataclass(frozen=True)
class Remedy:
    name: str
    source: str
    what: str
    how: str  # the `mnemoscope train` option(s)


REMEDIES: tuple[Remedy, ...] = (
    Remedy("reconstruction", "Trinh, Dai, Luong & Le 2018, 'Learning Longer-term Dependencies in RNNs with "
           "Auxiliary Losses' (ICML)",
           "a small decoder predicts the inputs of the last `horizon` steps from the memory reads; its loss "
           "is added to the task loss, so the reads must carry the past", "--reconstruction-loss W "
           "[--reconstruction-horizon K]"),
    Remedy("bypass_dropout", "stochastic depth (Huang et al. 2016) applied to the non-memory path",
           "with probability p per sequence the controller output / non-memory residual blocks are "
           "dropped from the output while training, so the output cannot rely on them alone",
           "--bypass-dropout P"),
    Remedy("bypass_bottleneck", "Alemi, Fischer, Dillon & Murphy 2017, 'Deep Variational Information "
           "Bottleneck' (ICLR)",
           "the controller's direct path into the output (a hybrid's attention blocks) passes through a "
           "stochastic Gaussian code whose KL to N(0, 1) is added to the loss with weight beta (I(Z;Y) - "
           "beta I(Z;X)), so the answer must come through memory; the code's mean at evaluation",
           "--bypass-bottleneck BETA"),
    Remedy("small_controller", "Santoro et al. 2016, 'Meta-Learning with Memory-Augmented Neural "
           "Networks' (a controller too small to hold the data itself)",
           "a controller without the capacity to keep the sequence has to write it to memory",
           "--controller-size N"),
    Remedy("curriculum", "Graves, Bellemare, Menick, Munos & Kavukcuoglu 2017, 'Automated Curriculum "
           "Learning for Neural Networks' (ICML)",
           "linear: the difficulty (copy: max_length) grows over the first part of training; bandit: "
           "Exp3.S picks a difficulty bucket (copy: max_length, MQAR: num_pairs) every step, rewarded by "
           "the loss decrease on it (prediction gain)",
           "--curriculum [linear|bandit] [--curriculum-param P] [--curriculum-fraction F]"),
    Remedy("ntm_stabilisers", "Collier & Beel 2018, 'Implementing Neural Turing Machines' (ICANN)",
           "memory initialised to the constant 1e-6; every gradient element clipped to [-10, 10]. Caveat: "
           "with all-zero initial weightings (initial_weights='zero': checkpoints made before the flag, the "
           "zoo's NTMs) a constant memory's slots all receive the same writes forever (the memory acts as one "
           "vector); new NTMs learn their initial weightings (also Collier & Beel), which breaks that symmetry",
           "--memory-init constant --clip 10"),
    Remedy("dnc_fixes", "Csordás & Schmidhuber 2019, 'Improving Differentiable Neural Computers "
           "Through Memory Masking, De-allocation, and Link Distribution Sharpness Control' (ICLR)",
           "masked content look-up, erasing freed slots, sharpened temporal links",
           "--dnc-fixes (or --model-param masking=true ...)"),
    Remedy("short_window", "Cabannes et al. 2025, 'Short window attention enables long-term memorization' "
           "(SWAX, arXiv:2509.24552): hybrids of sliding-window attention and a recurrent memory train their "
           "memory better when the window is short",
           "a short local-attention window cannot see far back, so long-range recall has to go "
           "through memory", "--window W"),
    Remedy("expert_choice_slots", "Zhou et al. 2022, 'Mixture-of-Experts with Expert Choice Routing' (NeurIPS)",
           "a slot_memory block whose slots each choose the top-k tokens of a chunk to store, so every slot "
           "is written by construction (models/slot_memory.py)",
           "--slot-routing expert_choice (with --model-param blocks='[\"slot_memory\", \"mlp\"]')"),
    Remedy("loss_free_balancing", "Wang et al. 2024, 'Auxiliary-Loss-Free Load Balancing Strategy for "
           "Mixture-of-Experts' (arXiv:2408.15664)",
           "token-choice slot routing with a per-slot bias on the routing scores (selection only), raised for "
           "under-loaded slots after every training step instead of an auxiliary loss",
           "--slot-routing token_choice --balance-bias-rate U"),
)


def read_site_names(model: SiteModel) -> list[str]:
    """What memory hands the network (sites of kind "read"), in declaration order."""
    return [n for n, s in model.site_specs().items() if s.kind == "read" and not s.on_request]


class ReconstructionLoss(nn.Module):
    """Auxiliary reconstruction loss from memory reads (after Trinh et al. 2018).

    At every step t the reads of all read sites, flattened and concatenated (`[B, T, F]`),
    go through a two-layer decoder that predicts the inputs x_{t-1}, ..., x_{t-horizon}
    (offsets before the sequence start are left out). Trinh et al. reconstruct a segment
    before randomly sampled anchor points with an LSTM decoder started from the hidden
    state; here every step is an anchor and one MLP predicts the whole segment, which is
    cheap enough to run every training step on a CPU and needs only the reads.

    The target is the input itself: token ids (cross-entropy over the vocabulary), 0/1 bit
    vectors (binary cross-entropy) or real vectors (squared error). The decoder's weights
    are trained with the model (`train` adds the parameters of an `nn.Module` extra loss
    to the optimizer) and are not saved in the checkpoint: they are a training aid only.
    """

    def __init__(self, sites: list[str], read_dims: list[int], *, input_dim: int, target: str,
                 horizon: int = 6, hidden: int = 64, weight: float = 1.0):
        super().__init__()
        if not sites:
            raise ValueError("reconstruction loss: the model has no memory read sites (kind 'read') to decode from")
        if target not in ("tokens", "bits", "real"):
            raise ValueError(f"reconstruction target must be tokens, bits or real, not {target!r}")
        if horizon < 1:
            raise ValueError(f"reconstruction horizon must be at least 1, got {horizon}")
        if weight < 0:
            raise ValueError(f"reconstruction weight must not be negative, got {weight}")
        self.sites = list(sites)
        self.read_dims = list(read_dims)
        self.input_dim = input_dim
        self.target = target
        self.horizon = horizon
        self.weight = weight
        self.decoder = nn.Sequential(nn.Linear(sum(read_dims), hidden), nn.Tanh(),
                                     nn.Linear(hidden, horizon * input_dim))

    def extra_repr(self) -> str:
        return (f"sites={self.sites}, target={self.target!r}, horizon={self.horizon}, weight={self.weight}, "
                "source='Trinh et al. 2018'")

    def __repr__(self) -> str:  # one line: the training config records it
        return f"ReconstructionLoss({self.extra_repr()})"

    def reads(self, trace: Trace) -> Tensor:
        missing = [s for s in self.sites if s not in trace]
        if missing:
            raise ValueError(f"reconstruction loss: sites {missing} were not recorded; pass record=loss.sites to train")
        parts = [trace[s].flatten(2) for s in self.sites]  # each [B, T, f]
        return torch.cat(parts, dim=-1)  # [B, T, F]

    def forward(self, model: SiteModel, batch: Batch, logits: Tensor, trace: Trace | None) -> Tensor:
        if trace is None:
            raise ValueError("reconstruction loss needs the recorded reads; pass record=loss.sites to train")
        r = self.reads(trace)  # [B, T, F]
        B, T, _ = r.shape
        K = min(self.horizon, T - 1)
        if K < 1:
            return r.sum() * 0.0
        pred = self.decoder(r).view(B, T, self.horizon, self.input_dim)  # [B, T, K, D]
        x = batch.inputs
        losses = []
        for k in range(1, K + 1):
            p = pred[:, k:, k - 1]  # predictions at t for x_{t-k}: [B, T-k, D]
            target = x[:, :-k]
            if self.target == "tokens":
                losses.append(F.cross_entropy(p.reshape(-1, self.input_dim), target.reshape(-1).long(), reduction="sum"))
            elif self.target == "bits":
                losses.append(F.binary_cross_entropy_with_logits(p, target.float(), reduction="none").sum(-1).sum())
            else:
                losses.append(F.mse_loss(p, target.float(), reduction="none").sum(-1).sum())
        count = sum(B * (T - k) for k in range(1, K + 1))
        return self.weight * torch.stack(losses).sum() / count


def reconstruction_loss(model: SiteModel, task: Task, *, horizon: int = 6, hidden: int = 64,
                        weight: float = 1.0) -> ReconstructionLoss:
    """A `ReconstructionLoss` sized for this model's read sites and this task's inputs.
    Pass it as `train(model, task, config, extra_loss=loss, record=loss.sites)`."""
    specs = model.site_specs()
    sites = read_site_names(model)
    dims = []
    for name in sites:
        shape = specs[name].shape
        if any(d is None for d in shape):
            raise ValueError(f"reconstruction loss: read site {name!r} has a variable-length axis {shape}")
        dims.append(int(torch.tensor(shape).prod()) if shape else 1)
    if task.vocab_size is not None:
        target, dim = "tokens", int(task.vocab_size)
    else:
        sample = task.sample(4, seed=0).inputs
        binary = bool(((sample == 0) | (sample == 1)).all())
        target, dim = ("bits" if binary else "real"), int(task.input_size)
    return ReconstructionLoss(sites, dims, input_dim=dim, target=target, horizon=horizon, hidden=hidden,
                              weight=weight)


# -- remedies that are config fields --------------------------------------------------------------

DNC_FIXES = ("masking", "deallocation", "sharpness")


def config_remedies(config_cls: type, arch: str, *, bypass_dropout: float | None = None,
                    bypass_bottleneck: float | None = None, controller_size: int | None = None,
                    memory_init: str | None = None, dnc_fixes: bool = False, window: int | None = None,
                    slot_routing: str | None = None, balance_bias_rate: float | None = None) -> dict:
    """Model-config overrides for the remedies that are architecture fields. A remedy the
    architecture has no field for is an error naming the architectures that have one."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    wanted: dict = {}
    if bypass_dropout is not None:
        wanted["bypass_dropout"] = float(bypass_dropout)
    if bypass_bottleneck is not None and float(bypass_bottleneck) != 0:  # 0 is "off" (no module); < 0 the config rejects
        wanted["bypass_bottleneck"] = float(bypass_bottleneck)
    if controller_size is not None:
        wanted["controller_size"] = int(controller_size)
    if memory_init is not None:
        wanted["memory_init"] = memory_init
    if dnc_fixes:
        wanted.update({k: True for k in DNC_FIXES})
    if window is not None:
        wanted["window"] = int(window)
    if slot_routing is not None:
        wanted["routing"] = slot_routing
    if balance_bias_rate is not None:
        wanted["balance_bias_rate"] = float(balance_bias_rate)
    where = {"bypass_dropout": "ntm, dnc, sequence",
             "bypass_bottleneck": "ntm, dnc, sequence (with an attention block)", "controller_size": "ntm, dnc",
             "memory_init": "ntm", "masking": "dnc", "deallocation": "dnc", "sharpness": "dnc",
             "window": "sequence (with an attention block)", "routing": "sequence (with a slot_memory block)",
             "balance_bias_rate": "sequence (with a slot_memory block)"}
    for key in wanted:
        if key not in fields:
            raise ValueError(f"architecture {arch!r} has no {key!r} setting; it applies to {where[key]}")
    return wanted


__all__ = ["REMEDIES", "Remedy", "ReconstructionLoss", "reconstruction_loss", "read_site_names",
           "config_remedies", "DNC_FIXES"]
