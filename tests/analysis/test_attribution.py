"""Attribution patching: exact on linear paths, AtP* closer than AtP through a softmax,
cancellation flagged, the layout of exact patching, and verification against it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mnemoscope.analysis import PatchingResult, patch_sweep
from mnemoscope.analysis.attribution import AttributionResult, agreement, attribution_patch, verify_attribution
from mnemoscope.models.sites import SiteModel, SiteSpec, output_spec
from mnemoscope.models.tasks import make_task


@dataclass
class ToyConfig:
    input_size: int
    output_size: int
    hidden: int = 6
    slots: int = 5
    sharpness: float = 0.0  # 0: a linear model; > 0: reads go through a softmax over slots
    cancel: bool = False  # the write reaches the state along two paths that cancel exactly; the input's
    # own path into the state (`carry`) carries the answer


class Toy(SiteModel):
    """A small recurrent model with a memory path and a bypass. Linear unless
    `sharpness` > 0, when the state addresses `slots` rows of a fixed matrix through a
    softmax (a distribution site, as an NTM's read weights) and the read feeds the state."""

    arch = "toy"
    Config = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        c = config
        self.inp = nn.Linear(c.input_size, c.hidden)
        self.rec = nn.Linear(c.hidden, c.hidden, bias=False)
        self.key = nn.Linear(c.hidden, c.slots)
        self.rows = nn.Parameter(torch.randn(c.slots, c.hidden))
        self.out = nn.Linear(2 * c.hidden, c.output_size)
        self.direct = nn.Linear(c.input_size, c.output_size)
        self.carry = nn.Linear(c.input_size, c.hidden)
        self.state_out = nn.Linear(c.hidden, c.output_size)

    def site_specs(self):
        c = self.config
        specs = [SiteSpec("memory.write", "write", (c.hidden,), ("feature",)),
                 SiteSpec("memory.read", "read", (c.hidden,), ("feature",)),
                 SiteSpec("controller.output", "bypass", (c.hidden,), ("feature",)),
                 output_spec(c.output_size)]
        if c.sharpness:
            specs.append(SiteSpec("memory.read_weights", "read_weights", (c.slots,), ("slot",), distribution=True))
        return {s.name: s for s in specs}

    def component_groups(self):
        return {"memory": ["rec", "key", "rows", "carry", "state_out"], "bypass": ["inp", "out", "direct"]}

    def compute(self, x):
        c = self.config
        B, T, _ = x.shape
        h = x.new_zeros(B, c.hidden)
        outs = []
        for t in range(T):
            w = self.site("memory.write", self.inp(x[:, t]), t)
            h = self.rec(h) + w
            if c.sharpness:
                weights = self.site("memory.read_weights", torch.softmax(c.sharpness * self.key(h), -1), t)
                h = h + weights @ self.rows  # the read feeds the state: the next softmax sees it
            if c.cancel:  # the write enters the state twice, with opposite signs
                r = self.site("memory.read", w, t)
                bypass = self.site("controller.output", -w, t)
                h = h - w + self.carry(x[:, t]) + r + bypass
                out = self.state_out(h)
            else:
                r = self.site("memory.read", h, t)
                bypass = self.site("controller.output", 0.5 * w, t)
                out = self.out(torch.cat([r, bypass], -1))
            outs.append(out + self.direct(x[:, t]))
        return torch.stack(outs, 1)


def toy(task, seed=0, **kw):
    torch.manual_seed(seed)
    model = Toy(ToyConfig(task.input_size, task.output_size, **kw))
    with torch.no_grad():  # a state that keeps the input until the answer, and outputs far apart, so
        model.rec.weight.copy_(0.9 * torch.eye(model.config.hidden))  # recovery (a ratio over their gap)
        model.out.weight.mul_(8)  # keeps float32's precision
    if kw.get("cancel"):
        with torch.no_grad():
            model.state_out.weight.mul_(8)
    return model.eval()


@pytest.fixture
def copy_task():
    return make_task("copy", bits=4, min_length=4, max_length=4)  # T = 9


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_first_order_is_exact_on_a_linear_model(copy_task, direction):
    model = toy(copy_task)
    pair = copy_task.patch_pairs(3, 0)
    exact = patch_sweep(model, copy_task, pair, direction=direction)
    est = attribution_patch(model, copy_task, pair, direction=direction)
    assert est.method == "AtP*" and est.label == "estimated" and est.exact_cells == 0  # no distribution site
    assert torch.allclose(est.patched, exact.patched, atol=1e-5)
    assert abs(exact.score_clean - exact.score_corrupted) > 0.1
    assert torch.allclose(est.scores, exact.scores, atol=1e-4, equal_nan=True)
    assert exact.scores.abs().max() > 0.1  # the sweep has real effects to estimate
    agree = agreement(est.scores, exact.scores, direction)  # ties at 0 may break differently in float32
    assert agree["spearman"] > 0.99 and agree["top10_recall"] == 1.0 and agree["cells"] == est.scores.numel()


def test_atp_star_is_closer_than_atp_through_a_softmax(copy_task):
    model = toy(copy_task, sharpness=4.0)
    pair = copy_task.patch_pairs(4, 1)
    exact = patch_sweep(model, copy_task, pair)
    atp = attribution_patch(model, copy_task, pair, exact_distributions=False, graddrop=False)
    star = attribution_patch(model, copy_task, pair)
    assert atp.method == "AtP" and star.method == "AtP*"
    i = star.sites.index("memory.read_weights")
    assert star.exact_cells == exact.scores.shape[1]
    assert torch.allclose(star.scores[i], exact.scores[i], atol=1e-5)  # the softmax's cells are recomputed
    err_atp = (atp.scores - exact.scores).abs()
    err_star = (star.scores - exact.scores).abs()
    assert float(err_atp[i].max()) > 1e-2  # linearising through the softmax misses
    assert float(err_star.mean()) < float(err_atp.mean())
    others = [k for k in range(len(star.sites)) if k != i]  # the other cells are the same first-order estimate
    assert torch.allclose(star.scores[others], atp.scores[others], atol=1e-6)


def test_cancelling_paths_are_flagged(copy_task):
    model = toy(copy_task, cancel=True)
    pair = copy_task.patch_pairs(2, 0)
    exact = patch_sweep(model, copy_task, pair, ["memory.write"])
    assert float(exact.scores.abs().max()) < 1e-5  # the write's two paths cancel: no effect at all
    est = attribution_patch(model, copy_task, pair, ["memory.write", "memory.read", "controller.output"])
    assert est.routes == ["memory.write", "memory.read", "controller.output"]
    w = est.sites.index("memory.write")
    assert float(est.scores[w].abs().max()) < 1e-5  # the estimate agrees, and cannot see why
    changed = torch.nan_to_num(est.cancellation[w]) > 0.1
    assert changed.any() and est.flagged >= int(changed.sum())  # blocking one path reveals the other
    plain = attribution_patch(model, copy_task, pair, ["memory.write"], graddrop=False)
    assert plain.cancellation is None and plain.flagged == 0


def test_layout_is_patching_results(make_model, task):
    model = make_model("dnc", task)
    pair = task.patch_pairs(2, 1)
    sites = ["memory.read", "memory.read_weights"]
    exact = patch_sweep(model, task, pair, sites, per_element="head")
    est = attribution_patch(model, task, pair, sites, per_element="head")
    assert isinstance(est, PatchingResult) and isinstance(est, AttributionResult)
    for f in dataclasses.fields(PatchingResult):
        a, b = getattr(est, f.name), getattr(exact, f.name)
        if isinstance(a, torch.Tensor):
            assert a.shape == b.shape and torch.equal(torch.isnan(a), torch.isnan(b)), f.name
        elif f.name not in ("skipped", "note"):
            assert a == pytest.approx(b, abs=1e-5) if isinstance(a, float) else a == b, f.name
    d, e = est.to_dict(), exact.to_dict()
    assert set(e) <= set(d) and set(e["summary"]) <= set(d["summary"])
    assert d["label"] == "estimated" and d["summary"]["label"] == "estimated"
    assert len(d["cancellation"]) == len(d["scores"])


def test_verify_reports_agreement_with_exact(copy_task):
    model = toy(copy_task, sharpness=4.0)
    pair = copy_task.patch_pairs(4, 1)
    exact = patch_sweep(model, copy_task, pair)
    est = attribution_patch(model, copy_task, pair)
    v = verify_attribution(model, copy_task, pair, est, top_k=5, sample=6, seed=3)
    assert est.verify is v and v["top_k"] == 5 and v["sampled"] == 6 and v["cells"] == 11 + v["flagged"]
    for cell in v["checked"]:
        i = est.sites.index(cell["site"])
        assert cell["exact"] == pytest.approx(float(exact.scores[i, cell["t"]]), abs=1e-5)
        assert cell["estimated"] == pytest.approx(float(est.scores[i, cell["t"]]), abs=1e-6)
    top = sorted(v["checked"][:5], key=lambda c: -abs(c["estimated"]))
    assert [abs(c["estimated"]) for c in top] == sorted((abs(c["estimated"]) for c in v["checked"][:5]), reverse=True)
    assert -1 <= v["spearman"] <= 1 and 0 <= v["top10_recall"] <= 1
    assert est.to_dict()["verify"]["cells"] == v["cells"]


def test_a_model_that_does_not_tell_the_answers_apart_gives_nan(copy_task):
    model = toy(copy_task)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    pair = copy_task.patch_pairs(1, 0)
    est = attribution_patch(model, copy_task, pair)
    assert torch.isnan(est.scores).all() and "undefined" in est.note and est.flagged == 0
