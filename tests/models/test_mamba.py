"""Mamba-1: scan parity with a step-by-step reference, sites, interventions, implicit
attention, and logits parity with transformers' MambaForCausalLM (random tiny model)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mnemoscope.models import Intervention, build_model, run_with_sites
from mnemoscope.models.mamba import (
    Mamba,
    MambaModelConfig,
    SelectiveSSM,
    implicit_attention,
    parallel_scan,
    segsum,
    sequential_scan,
)
from mnemoscope.models.sites import SiteModel, SiteSpec, output_spec


class OneLayer(SiteModel):
    """A bare SelectiveSSM behind an unprefixed scope, as a stacked model would hold it."""

    arch = "test-one-ssm"

    def __init__(self, layer: SelectiveSSM):
        super().__init__(MambaModelConfig(input_size=layer.d_model, output_size=layer.d_model))
        self.layer = layer

    def site_specs(self) -> dict[str, SiteSpec]:
        specs = self.layer.site_specs() + [output_spec(self.layer.d_model)]
        return {s.name: s for s in specs}

    def compute(self, x):
        return self.layer(x, self.scope(""))


def reference_ssm(layer: SelectiveSSM, x: torch.Tensor):
    """Plain step-by-step Mamba-1 mixer: returns (out, y before skip/gate, states, conv output)."""
    b, T, _ = x.shape
    Di, N, R, K = layer.d_inner, layer.d_state, layer.dt_rank, layer.d_conv
    xz = x @ layer.in_proj.weight.T
    if layer.in_proj.bias is not None:
        xz = xz + layer.in_proj.bias
    xi, z = xz[..., :Di], xz[..., Di:]
    w = layer.conv1d.weight[:, 0, :]  # [Di, K]; tap K-1 is the current step
    A = -torch.exp(layer.A_log)
    h = torch.zeros(b, Di, N)
    outs, ys, states, us = [], [], [], []
    for t in range(T):
        u = torch.zeros(b, Di) if layer.conv1d.bias is None else layer.conv1d.bias.expand(b, Di).clone()
        for k in range(K):
            s = t - (K - 1) + k
            if s >= 0:
                u = u + w[:, k] * xi[:, s]
        u = F.silu(u)
        proj = u @ layer.x_proj.weight.T
        dt = F.softplus(proj[:, :R] @ layer.dt_proj.weight.T + layer.dt_proj.bias)
        Bt, Ct = proj[:, R:R + N], proj[:, R + N:]
        h = torch.stack([torch.exp(dt[:, d, None] * A[d]) * h[:, d] + dt[:, d, None] * Bt * u[:, d, None]
                         for d in range(Di)], dim=1)  # one channel at a time, as the formula reads
        y = (h * Ct[:, None, :]).sum(-1)
        out = (y + layer.D * u) * F.silu(z[:, t])
        out = out @ layer.out_proj.weight.T
        if layer.out_proj.bias is not None:
            out = out + layer.out_proj.bias
        outs.append(out), ys.append(y), states.append(h), us.append(u)
    st = lambda v: torch.stack(v, dim=1)  # noqa: E731
    return st(outs), st(ys), st(states), st(us)


def make_layer(d_model=8, d_state=4, d_conv=4, expand=2, bias=False, conv_bias=True, chunk=256, seed=0, mode="auto"):
    torch.manual_seed(seed)
    layer = SelectiveSSM(d_model, d_state=d_state, d_conv=d_conv, expand=expand, bias=bias, conv_bias=conv_bias,
                         scan_chunk=chunk, scan_mode=mode)
    with torch.no_grad():  # move off the structured init so a mixed-up channel or state index shows
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


# -- scan ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize("T", [1, 2, 7, 16, 33])
@pytest.mark.parametrize("chunk", [1, 3, 8, 256])
@pytest.mark.parametrize("shape", [(1, 4, 1), (2, 8, 4), (3, 6, 16)])  # (batch, d_model, d_state)
def test_scan_parity_grid(mode, T, chunk, shape):
    b, d_model, d_state = shape
    layer = make_layer(d_model=d_model, d_state=d_state, d_conv=3 if d_state == 4 else 4,
                       bias=d_state == 16, chunk=chunk, seed=T, mode=mode)
    x = torch.randn(b, T, d_model)
    with torch.no_grad():
        ref_out, ref_y, ref_h, _ = reference_ssm(layer, x)
        out, trace = run_with_sites(OneLayer(layer), x, record=["ssm.read", "ssm.state"])
    assert (out - ref_out).abs().max() < 1e-5
    assert (trace["ssm.read"] - ref_y).abs().max() < 1e-5
    assert trace["ssm.state"].shape == (b, T, layer.d_inner, d_state)
    assert (trace["ssm.state"] - ref_h).abs().max() < 1e-5


def test_scans_with_carried_state():
    torch.manual_seed(1)
    a, u, h0 = torch.rand(2, 13, 3, 2), torch.randn(2, 13, 3, 2), torch.randn(2, 3, 2)
    h, ref = h0, []
    for t in range(13):
        h = a[:, t] * h + u[:, t]
        ref.append(h)
    ref = torch.stack(ref, 1)
    hs, prods = parallel_scan(a, u, h0)
    assert (hs - ref).abs().max() < 1e-5
    assert (prods - torch.cumprod(a, 1)).abs().max() < 1e-6
    assert (sequential_scan(a, u, h0) - ref).abs().max() < 1e-6
    assert (sequential_scan(a, u)[:, 0] - u[:, 0]).abs().max() == 0


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_scan_gradients_match_reference(mode):
    layer = make_layer(d_model=4, d_state=3, chunk=5, mode=mode)
    x = torch.randn(2, 11, 4)
    out = OneLayer(layer)(x)
    got = torch.autograd.grad(out.square().sum(), list(layer.parameters()))
    ref_out, *_ = reference_ssm(layer, x)
    want = torch.autograd.grad(ref_out.square().sum(), list(layer.parameters()))
    for g, w in zip(got, want):
        assert (g - w).abs().max() < 1e-4 * (1 + w.abs().max())


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_scan_stays_finite_with_fast_decay_over_long_sequences(mode):
    layer = make_layer(d_model=4, d_state=4, chunk=64, mode=mode)
    with torch.no_grad():
        layer.dt_proj.bias.fill_(6.0)  # dt ~ 6, |A| up to ~5: log-decay sums reach -1e4
        layer.A_log.add_(1.0)
    x = torch.randn(1, 300, 4)
    with torch.no_grad():
        ref_out, *_ = reference_ssm(layer, x)
        out, trace = run_with_sites(OneLayer(layer), x, record=["ssm.attention"])
    assert torch.isfinite(out).all() and torch.isfinite(trace["ssm.attention"]).all()
    assert (out - ref_out).abs().max() < 1e-4


def test_step_path_equals_parallel_path_values_and_gradients():
    layer = make_layer(d_model=6, d_state=3, chunk=4, mode="parallel")
    model = OneLayer(layer)
    x = torch.randn(2, 9, 6)
    out_par = model(x)
    g_par = torch.autograd.grad(out_par.square().sum(), list(layer.parameters()))
    identity = Intervention("ssm.state", lambda v, t: v)  # forces the step-by-step scan
    out_seq, _ = run_with_sites(model, x, interventions=[identity])
    g_seq = torch.autograd.grad(out_seq.square().sum(), list(layer.parameters()))
    assert (out_par - out_seq).abs().max() < 1e-5
    for a, b in zip(g_par, g_seq):
        assert (a - b).abs().max() < 1e-4 * (1 + b.abs().max())


# -- implicit attention -------------------------------------------------------------------
def test_segsum_matches_direct_sums():
    x = torch.randn(2, 6)
    s = segsum(x)
    for i in range(6):
        for j in range(6):
            want = x[:, j + 1:i + 1].sum(-1) if j <= i else torch.full((2,), float("-inf"))
            assert torch.allclose(s[:, i, j], want, atol=1e-6)


@pytest.mark.parametrize("T", [1, 5, 12])
def test_implicit_attention_reproduces_read(T):
    layer = make_layer(d_model=8, d_state=4, seed=T)
    x = torch.randn(2, T, 8)
    with torch.no_grad():
        _, trace = run_with_sites(OneLayer(layer), x, record=["ssm.attention", "ssm.read", "ssm.input"])
    alpha = trace["ssm.attention"]  # [b, T(i), Di, T(j)]
    assert alpha.shape == (2, T, layer.d_inner, T)
    y = torch.einsum("bidj,bjd->bid", alpha, trace["ssm.input"])
    assert (y - trace["ssm.read"]).abs().max() < 1e-5
    upper = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # [i, j], j > i
    assert torch.all(alpha.permute(0, 2, 1, 3)[..., upper] == 0)


def test_implicit_attention_matches_product_formula():
    torch.manual_seed(3)
    T, Di, N = 5, 3, 2
    dt, A = torch.rand(1, T, Di), -torch.rand(Di, N) * 2
    B, C = torch.randn(1, T, N), torch.randn(1, T, N)
    alpha = implicit_attention(dt, A, B, C)
    for i in range(T):
        for j in range(i + 1):
            for d in range(Di):
                decay = torch.ones(N)
                for k in range(j + 1, i + 1):
                    decay = decay * torch.exp(dt[0, k, d] * A[d])
                want = (C[0, i] * decay * dt[0, j, d] * B[0, j]).sum()
                assert abs(alpha[0, i, d, j] - want) < 1e-6


def test_attention_intervention_drives_read():
    layer = make_layer()
    model = OneLayer(layer)
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        base = model(x)
        same, _ = run_with_sites(model, x, interventions=[Intervention("ssm.attention", lambda v, t: v)])
        _, trace = run_with_sites(model, x, record=["ssm.read"],
                                  interventions=[Intervention("ssm.attention", 0.0, steps=[3])])
    assert (same - base).abs().max() < 1e-5
    assert trace["ssm.read"][:, 3].abs().max() == 0.0 and trace["ssm.read"][:, 4].abs().max() > 0
    with pytest.raises(ValueError, match="ambiguous"):
        run_with_sites(model, x, interventions=[Intervention("ssm.attention", 0.0), Intervention("ssm.state", 0.0)])


# -- the model: sites and interventions -----------------------------------------------------
def lm(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=11, d_model=8, n_layer=2, d_state=4, expand=2)
    cfg.update(kw)
    model = build_model("mamba", cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for layer in model.layers:  # dt ~ 1 instead of the init's ~0.01, so the state carries weight
            layer.mixer.dt_proj.bias.fill_(0.5)
    return model


def test_sites_declared_and_star_skips_on_request():
    m = lm()
    specs = m.site_specs()
    for i in range(2):
        for s in ("ssm.state", "ssm.read", "ssm.skip", "ssm.gate", "ssm.attention", "ssm.input", "ssm.delta",
                  "residual"):
            assert f"layers.{i}.{s}" in specs
    assert specs["layers.0.ssm.state"].on_request and specs["layers.0.ssm.attention"].on_request
    assert specs["layers.1.ssm.skip"].kind == "bypass" and specs["layers.1.ssm.gate"].kind == "gate"
    assert specs["layers.0.ssm.attention"].shape == (16, None)
    ids = torch.randint(0, 11, (3, 7))
    _, trace = run_with_sites(m, ids, record="*")
    assert not any(n.endswith(("ssm.state", "ssm.attention")) for n in trace.names())
    assert trace["layers.1.ssm.read"].shape == (3, 7, 16)
    assert trace["output"].shape == (3, 7, 11)
    _, trace = run_with_sites(m, ids, record=["layers.0.ssm.state"])
    assert trace.names() == ["layers.0.ssm.state"] and trace["layers.0.ssm.state"].shape == (3, 7, 16, 4)


def test_state_computed_only_on_request(monkeypatch):
    import mnemoscope.models.mamba as mamba

    m = lm()
    calls = []
    real = mamba.implicit_attention
    monkeypatch.setattr(mamba, "implicit_attention", lambda *a: calls.append(1) or real(*a))
    ids = torch.randint(0, 11, (2, 5))
    run_with_sites(m, ids, record="*")
    m(ids)
    assert calls == []
    run_with_sites(m, ids, record=["layers.1.ssm.attention"])
    assert calls == [1]


def test_zeroing_read_changes_outputs_only_from_t_on():
    m = lm()
    ids = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        base = m(ids)
        for t in (0, 4, 8):
            out, _ = run_with_sites(m, ids, interventions=[Intervention("layers.0.ssm.read", 0.0, steps=[t])])
            assert torch.equal(out[:, :t], base[:, :t])
            assert (out[:, t] - base[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize("chunk", [3, 256])  # the step index must stay global across scan chunks
def test_zeroing_state_changes_outputs_only_from_t_on(chunk):
    m = lm()
    for layer in m.layers:
        layer.mixer.scan_chunk = chunk
    ids = torch.randint(0, 11, (2, 9))
    t = 4
    with torch.no_grad():
        base = m(ids)
        out, trace = run_with_sites(m, ids, record=["layers.0.ssm.state", "layers.0.ssm.read"],
                                    interventions=[Intervention("layers.0.ssm.state", 0.0, steps=[t])])
    assert (out[:, :t] - base[:, :t]).abs().max() < 1e-5
    assert (out[:, t] - base[:, t]).abs().max() > 1e-4 and (out[:, t + 1] - base[:, t + 1]).abs().max() > 1e-4
    assert trace["layers.0.ssm.state"][:, t].abs().max() == 0.0
    assert trace["layers.0.ssm.read"][:, t].abs().max() == 0.0


def test_batched_interventions_equal_separate_runs():
    m = lm()
    ids = torch.randint(0, 11, (1, 7)).expand(5, 7)
    with torch.no_grad():
        for site in ("layers.0.ssm.read", "layers.1.ssm.state", "layers.0.residual"):
            ivs = [Intervention(site, 0.0, steps=[t], rows=[t]) for t in range(5)]
            batched, _ = run_with_sites(m, ids, interventions=ivs)
            for t in range(5):
                single, _ = run_with_sites(m, ids[:1], interventions=[Intervention(site, 0.0, steps=[t])])
                assert (batched[t] - single[0]).abs().max() < 1e-5, (site, t)


def test_zeroing_the_residual_leaves_the_mixer_path():
    m = lm(n_layer=1)
    ids = torch.randint(0, 11, (2, 6))
    with torch.no_grad():
        _, trace = run_with_sites(m, ids, record=["layers.0.residual"])
        emb = m.embeddings(ids)
        assert torch.allclose(trace["layers.0.residual"], emb)
        out, _ = run_with_sites(m, ids, interventions=[Intervention("layers.0.residual", 0.0)])
        layer = m.layers[0]
        want = m.lm_head(m.norm_f(layer.mixer(layer.norm(emb), m.scope("layers.0"))))
    assert (out - want).abs().max() < 1e-5


def test_component_groups_partition_parameters():
    for tied in (False, True):
        m = lm(tie_embeddings=tied)
        groups = m.component_groups()
        assert {"memory", "bypass", "embedding", "output"} <= set(groups)
        owner = {}
        for name, _ in m.named_parameters():
            hits = [g for g, prefixes in groups.items() for p in prefixes if name == p or name.startswith(p + ".")]
            assert len(hits) == 1, (name, hits)
            owner[name] = hits[0]
        assert owner["layers.1.mixer.A_log"] == "memory" and owner["layers.0.mixer.D"] == "bypass"


def test_float_inputs_and_bad_configs():
    m = build_model("mamba", dict(input_size=5, output_size=3, d_model=8, n_layer=1, d_state=2))
    assert m(torch.randn(2, 4, 5)).shape == (2, 4, 3)
    assert m(torch.randint(0, 5, (2, 4))).shape == (2, 4, 3)  # one-hot by the base class
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        build_model("mamba", dict(d_model=8))
    with pytest.raises(ValueError, match="tie_embeddings"):
        build_model("mamba", dict(vocab_size=5, output_size=3, tie_embeddings=True))
    lm_ = lm()
    with pytest.raises(ValueError, match="token ids"):
        lm_(torch.randn(2, 4, 3))
    soft = F.one_hot(torch.tensor([[1, 2, 3]]), 11).float()
    with torch.no_grad():
        assert torch.allclose(lm_(soft), lm_(torch.tensor([[1, 2, 3]])), atol=1e-6)


# -- parity with transformers --------------------------------------------------------------
def hf_model(tie=True, use_bias=False, conv_bias=True):
    import transformers  # a test extra: this must fail, not skip, where it is missing

    torch.manual_seed(0)
    cfg = transformers.MambaConfig(vocab_size=37, hidden_size=24, state_size=5, num_hidden_layers=2, expand=2,
                                   conv_kernel=3, time_step_rank=3, use_bias=use_bias, use_conv_bias=conv_bias,
                                   tie_word_embeddings=tie, layer_norm_epsilon=1e-5)
    model = transformers.MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # init leaves D = 1, norms = 1, conv bias = 0: perturb so every tensor matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def assert_logits_match(hf, ours, T=19):
    ids = torch.randint(0, hf.config.vocab_size, (3, T))
    with torch.no_grad():
        want = hf(ids, use_cache=False).logits
        want_cached = hf(ids, use_cache=True).logits
        got = ours(ids)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4
    assert (got - want_cached).abs().max() < 1e-4


@pytest.mark.parametrize("tie,use_bias,conv_bias", [(True, False, True), (False, True, False)])
def test_logits_match_transformers(tie, use_bias, conv_bias):
    from mnemoscope.models.importers.mamba_hf import convert_hf_state_dict

    hf = hf_model(tie, use_bias, conv_bias)
    ours = convert_hf_state_dict(hf.state_dict(), hf.config.to_dict())
    assert isinstance(ours, Mamba) and ours.config.tie_embeddings == tie
    assert ours.layers[0].mixer.dt_rank == 3 and ours.layers[0].mixer.d_conv == 3
    assert_logits_match(hf, ours)


def test_import_directory_single_and_sharded(tmp_path):
    from mnemoscope.models.importers.mamba_hf import import_mamba_dir

    hf = hf_model(tie=False)
    hf.save_pretrained(tmp_path / "one", safe_serialization=True)
    hf.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    for sub in ("one", "sharded"):
        ours, meta = import_mamba_dir(tmp_path / sub)
        assert meta["format"] == "hf" and meta["config"]["n_layer"] == 2
        assert meta["n_params"] == sum(p.numel() for p in hf.parameters())
        assert_logits_match(hf, ours)
    assert len(meta["files"]) > 1


def test_import_mamba_ssm_names_and_config(tmp_path):
    """state-spaces/mamba checkpoints: `backbone.embedding.weight`, d_model/n_layer/ssm_cfg config."""
    from safetensors.torch import save_file

    from mnemoscope.models.importers.mamba_hf import import_mamba_dir

    hf = hf_model(tie=True)
    sd = {k.replace("embeddings.", "embedding."): v.contiguous() for k, v in hf.state_dict().items()
          if k != "lm_head.weight"}
    save_file(sd, str(tmp_path / "model.safetensors"))
    cfg = dict(d_model=24, n_layer=2, vocab_size=35, rms_norm=True, pad_vocab_size_multiple=37,
               ssm_cfg=dict(d_state=5, d_conv=3, expand=2, dt_rank=3))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ours, meta = import_mamba_dir(tmp_path)
    assert meta["format"] == "mamba_ssm" and ours.config.vocab_size == 37  # padded table wins
    assert_logits_match(hf, ours)


def test_import_refuses_pickles_and_mismatches(tmp_path):
    from mnemoscope.models.importers.mamba_hf import convert_hf_state_dict, import_mamba_dir

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 8, "num_hidden_layers": 1}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickled"):
        import_mamba_dir(tmp_path)
    hf = hf_model()
    cfg = hf.config.to_dict()
    with pytest.raises(ValueError, match="missing"):
        convert_hf_state_dict(hf.state_dict(), dict(cfg, num_hidden_layers=3))
    with pytest.raises(ValueError, match="Mamba-1"):
        convert_hf_state_dict(hf.state_dict(), dict(cfg, model_type="mamba2"))


def test_default_dt_rank_matches_hf():
    assert SelectiveSSM(40).dt_rank == math.ceil(40 / 16) == 3
    assert SelectiveSSM(40).A_log.shape == (80, 16)


def test_config_and_weights_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    m = lm(tie_embeddings=True)
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))  # refuses shared tensors: none when tied
    again = build_model("mamba", m.config_dict())
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    ids = torch.randint(0, 11, (2, 5))
    with torch.no_grad():
        assert torch.equal(again(ids), m(ids))
