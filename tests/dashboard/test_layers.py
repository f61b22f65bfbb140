"""The per-layer bits of Explore and Ablate on a Hugging Face hybrid's real site list (Gated DeltaNet
layers 0, 1, 3 and attention at layer 2): the layer chooser draws the attention layer's pattern, the
per-layer necessity of the latest report is shown as the server sent it, and Ablate's Layers picker
offers one layer or every layer of a kind as names or globs the server expands to the right sites."""
from __future__ import annotations

import pytest
from dash import html

from mnemoscope.dashboard import explore_data
from mnemoscope.dashboard.pages import ablate, explore
from mnemoscope.models.sites import resolve_sites

from .conftest import KINDS


@pytest.fixture(scope="module")
def hf_model():
    import torch

    from mnemoscope.models.hf import HFConfig, HFModel, bundled_hf_config

    torch.manual_seed(0)
    return HFModel(HFConfig(bundled_hf_config("qwen3_next_tiny")))


@pytest.fixture(scope="module")
def hf_specs(hf_model):
    return [s.to_dict() for s in hf_model.site_specs().values()]


def test_explore_layer_chooser_draws_the_attention_layer_pattern(hf_specs):
    layers = explore_data.layer_choices(hf_specs)
    assert [(e["layer"], e["heads"]) for e in layers] == [(2, 4)]
    assert "layers.2.attention.pattern" in explore_data.sites_to_record(hf_specs, 2)


def test_ablate_layer_options_expand_to_the_right_sites(hf_model, hf_specs):
    options = ablate.layer_options(hf_specs)
    values = [o["value"] for o in options]
    assert values == ["layers.*.linear_attention.out", "layers.*.attention.out", "layers.0.linear_attention.out",
                      "layers.1.linear_attention.out", "layers.2.attention.out", "layers.3.linear_attention.out"]
    labels = {o["value"]: o["label"] for o in options}
    assert labels["layers.*.linear_attention.out"] == "all linear_attention layers (memory: 0, 1, 3)"
    assert labels["layers.2.attention.out"] == "layer 2 · attention (not memory)"
    # the globs are what the server resolves (server/kinds/base.site_names): memory layers only, attention only
    specs = hf_model.site_specs()
    assert resolve_sites(specs, ["layers.*.linear_attention.out"]) == {
        "layers.0.linear_attention.out", "layers.1.linear_attention.out", "layers.3.linear_attention.out"}
    assert resolve_sites(specs, ["layers.*.attention.out"]) == {"layers.2.attention.out"}


def test_ablate_layer_options_need_per_layer_sites():
    ntm = [{"name": "memory.read", "kind": "read", "role": "memory"}, {"name": "controller.out", "role": "bypass"}]
    assert ablate.layer_options(ntm) == []
    # MLPs and residual streams are no layer choice
    assert ablate.layer_options([{"name": "layers.0.mlp.out", "role": "series"},
                                 {"name": "layers.0.residual", "role": "bypass"}]) == []


def test_ablation_body_adds_the_chosen_layers(fake_api, hf_specs):
    body = ablate.ablation_body(KINDS, ["layers.0.residual"], "mean", "all", 8, 0, ["layers.*.attention.out"])
    assert body["specs"][0]["sites"] == ["layers.0.residual", "layers.*.attention.out"]
    only_layers = ablate.ablation_body(KINDS, [], "mean", "all", 8, 0, ["layers.2.attention.out"])
    assert only_layers["specs"][0]["sites"] == ["layers.2.attention.out"]
    with pytest.raises(ValueError, match="at least one site or layer"):
        ablate.ablation_body(KINDS, [], "mean", "all", 8, 0, [])
    api = fake_api(sites={"c1": hf_specs})
    options, kept = ablate.load_layers(api, "c1", ["layers.2.attention.out", "memory.read"])
    assert len(options) == 6 and kept == ["layers.2.attention.out"]
    assert ablate.load_layers(api, None, ["x"]) == ([], [])


def _report(layers):
    return {"kind": "report", "data": {"reliance": {"warnings": [], "layers": layers}}}


def test_explore_shows_the_reports_per_layer_necessity(fake_api):
    rows = [{"layer": 0, "kind": "linear_attention", "site": "layers.0.linear_attention.out", "role": "memory",
             "necessity": {"value": 0.91, "ci95": [0.8, 0.97], "mode": "mean"}, "needed": True},
            {"layer": 2, "kind": "attention", "site": "layers.2.attention.out", "role": "bypass",
             "necessity": {"value": 0.05, "ci95": [0.0, 0.12], "mode": "mean"}, "needed": False}]
    api = fake_api(checkpoints=[{"id": "c1", "report_job_id": "j1"}], jobs={"j1": [{"status": "done",
                                                                                     "result": _report(rows)}]})
    notes = explore.report_notes(api, "c1")
    assert len(notes) == 1 and isinstance(notes[0], html.Table) and notes[0].id == "explore-layer-necessity"
    cells = [[c.children for c in tr.children] for tr in notes[0].children[2].children]
    assert cells == [["0", "linear_attention (memory)", "0.91 [0.80, 0.97]", "yes"],
                     ["2", "attention (not memory)", "0.05 [0.00, 0.12]", "no"]]
    # a report without per-layer rows (an NTM), or no report at all: nothing
    api = fake_api(checkpoints=[{"id": "c1", "report_job_id": "j1"}], jobs={"j1": [{"status": "done",
                                                                                     "result": _report([])}]})
    assert explore.report_notes(api, "c1") == []
    assert explore.report_notes(fake_api(checkpoints=[{"id": "c2"}]), "c2") == []
