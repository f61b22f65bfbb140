"""LinearMemory: the chunked and recurrent forms against a plain per-head loop, and its sites."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from mnemoscope.models import Intervention, build_model, run_with_sites
from mnemoscope.models.linear_memory import (
    DELTA_RULES,
    LinearMemory,
    chunked_memory,
    implicit_attention,
    recurrent_memory,
    retnet_gammas,
    segsum,
)

# (rule, gate) pairs: every update rule, GLA with both decay shapes
VARIANTS = [("linear", "scalar"), ("retnet", "scalar"), ("gla", "scalar"), ("gla", "vector"),
            ("delta", "scalar"), ("gated_delta", "scalar")]
VARIANT_IDS = [r if r != "gla" else f"gla-{g}" for r, g in VARIANTS]


def reference(q, k, v, beta, alpha):
    """The definition, one batch row and one head at a time, one step at a time.

    q, k [B, T, H, K]; v [B, T, H, V]; beta [B, T, H] or None; alpha [B, T, H] or [B, T, H, K] or None.
    S_t = diag(alpha_t) S_{t-1}, then S_t += beta_t k_t (v_t - S_t^T k_t)^T (delta) or k_t v_t^T; o_t = S_t^T q_t.
    """
    B, T, H, K = q.shape
    out = torch.zeros(B, T, H, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            S = torch.zeros(K, v.shape[-1], dtype=torch.float64)
            for t in range(T):
                if alpha is not None:
                    a = alpha[b, t, h].double()
                    S = (a[:, None] if a.dim() else a) * S
                kt, vt, qt = k[b, t, h].double(), v[b, t, h].double(), q[b, t, h].double()
                if beta is not None:
                    S = S + beta[b, t, h].double() * torch.outer(kt, vt - S.T @ kt)
                else:
                    S = S + torch.outer(kt, vt)
                out[b, t, h] = S.T @ qt
    return out


def random_inputs(rule, gate, B, T, H, K, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g) * K ** -0.5
    k = torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    beta = alpha = None
    if rule in DELTA_RULES:
        k = F.normalize(k, dim=-1)  # as the layer does: keeps I - beta k k^T contractive
        beta = torch.rand(B, T, H, generator=g)
    else:
        k = k * K ** -0.5
    if rule == "retnet":
        alpha = retnet_gammas(H).float().expand(B, T, H)
    elif rule in ("gla", "gated_delta"):
        shape = (B, T, H, K) if gate == "vector" else (B, T, H)
        alpha = 0.5 + 0.5 * torch.rand(*shape, generator=g)
    return q, k, v, beta, alpha


def heads_first(q, k, v, beta, alpha):
    lg = None
    if alpha is not None:
        lg = torch.log(alpha).transpose(1, 2)
        lg = lg if alpha.dim() == 4 else lg.unsqueeze(-1)
    return (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            beta.transpose(1, 2) if beta is not None else None, lg)


SHAPES = [  # B, T, H, K, V
    (1, 1, 1, 4, 4),
    (2, 7, 1, 4, 3),
    (2, 16, 3, 8, 5),
    (1, 33, 2, 5, 8),
    (3, 20, 2, 16, 16),
]


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}H{}K{}V{}".format(*s))
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_chunked_and_recurrent_equal_reference(variant, shape, chunk):
    rule, gate = variant
    inputs = random_inputs(rule, gate, *shape)
    ref = reference(*inputs).float()  # [B, T, H, V]
    qh, kh, vh, bh, lgh = heads_first(*inputs)
    chunked = chunked_memory(qh, kh, vh, bh, lgh, chunk).transpose(1, 2)
    recurrent = recurrent_memory(qh, kh, vh, bh, lgh).transpose(1, 2)
    assert (chunked - ref).abs().max() < 1e-5
    assert (recurrent - ref).abs().max() < 1e-5


@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: "B{}T{}H{}K{}V{}".format(*s))
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_implicit_attention_reproduces_outputs(variant, shape):
    inputs = random_inputs(*variant, *shape, seed=1)
    qh, kh, vh, bh, lgh = heads_first(*inputs)
    A = implicit_attention(qh, kh, bh, lgh)  # [B, H, T, T]
    T = shape[1]
    assert torch.all(A.triu(1) == 0), "A must be causal"
    o = (A @ vh.double()).transpose(1, 2)
    assert (o - reference(*inputs)).abs().max() < 1e-5


def test_implicit_attention_of_delta_rule_is_product_of_transitions():
    """A[t, s] = q_t^T T_t T_{t-1} ... T_{s+1} b_s k_s with T_i = a_i (I - b_i k_i k_i^T), written out."""
    q, k, v, beta, alpha = random_inputs("gated_delta", "scalar", 1, 6, 1, 4, 3, seed=2)
    A = implicit_attention(*heads_first(q, k, v, beta, alpha)[:2], beta.transpose(1, 2),
                           torch.log(alpha.double()).transpose(1, 2).unsqueeze(-1))[0, 0]
    qd, kd, bd, ad = q[0, :, 0].double(), k[0, :, 0].double(), beta[0, :, 0].double(), alpha[0, :, 0].double()
    for t in range(6):
        for s in range(t + 1):
            P = torch.eye(4, dtype=torch.float64)
            for i in range(s + 1, t + 1):
                P = (ad[i] * (torch.eye(4, dtype=torch.float64) - bd[i] * torch.outer(kd[i], kd[i]))) @ P
            assert abs(A[t, s] - qd[t] @ P @ (bd[s] * kd[s])) < 1e-10


def test_segsum_handles_zero_decay():
    lg = torch.log(torch.tensor([[0.5], [0.0], [0.25]]))  # a decay of exactly 0 in the middle
    D = torch.exp(segsum(lg))[..., 0]
    expected = torch.tensor([[1.0, 0, 0], [0.0, 1, 0], [0.0, 0.25, 1]])
    assert torch.allclose(D, expected)


# -- the layer ----------------------------------------------------------------------------------
def layer_inputs(layer, x):
    q, k, v = layer._features(x)
    beta = torch.sigmoid(layer.b_proj(x)) if layer.rule in DELTA_RULES else None
    lg = layer._log_decay(x)
    return q, k, v, beta, (torch.exp(lg) if lg is not None else None)


@pytest.mark.parametrize("conv", [0, 3])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_layer_modes_agree_with_reference(variant, conv):
    torch.manual_seed(0)
    layer = LinearMemory(24, heads=3, rule=variant[0], gate=variant[1], chunk_size=8, conv_size=conv)
    x = torch.randn(2, 19, 24)
    layer.o_norm = None  # so the output is the read o_t through the output projection alone
    ref = reference(*layer_inputs(layer, x)).float()
    reads = {}
    for mode in ("chunked", "recurrent"):
        layer.mode = mode
        reads[mode] = layer(x)
    expected = layer.o_proj(ref.reshape(2, 19, -1))
    assert (reads["chunked"] - expected).abs().max() < 1e-5
    assert (reads["recurrent"] - expected).abs().max() < 1e-5


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_chunked_gradients_match_recurrent(variant):
    torch.manual_seed(0)
    layer = LinearMemory(16, heads=2, rule=variant[0], gate=variant[1], chunk_size=4)
    x = torch.randn(2, 11, 16)
    grads = {}
    for mode in ("chunked", "recurrent"):
        layer.mode = mode
        layer.zero_grad()
        layer(x).pow(2).sum().backward()
        grads[mode] = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    assert grads["chunked"].keys() == grads["recurrent"].keys() and grads["chunked"]
    for n in grads["chunked"]:
        assert torch.isfinite(grads["chunked"][n]).all()
        a, b = grads["chunked"][n], grads["recurrent"][n]
        assert (a - b).abs().max() <= 1e-4 * b.abs().max(), n


@pytest.mark.parametrize("bad, match", [
    (dict(rule="lstm"), "unknown memory rule"),
    (dict(rule="delta", gate="vector"), "applies to rule 'gla' only"),
    (dict(feature_map="relu"), "unknown feature_map"),
    (dict(mode="parallel"), "unknown mode"),
    (dict(heads=5), "not divisible"),
])
def test_bad_config_is_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        LinearMemory(16, **{"heads": 2, **bad})


# -- sites through a model ----------------------------------------------------------------------
def memory_model(rule, gate="scalar", mode="chunked", **kw):
    torch.manual_seed(0)
    return build_model("sequence", dict(vocab_size=11, output_size=5, d_model=16, blocks=["memory"], heads=2,
                                        rule=rule, gate=gate, mode=mode, chunk_size=4, **kw))


@pytest.mark.parametrize("mode", ["chunked", "recurrent"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_attention_site_reproduces_read(variant, mode):
    m = memory_model(*variant, mode=mode)
    x = torch.randint(0, 11, (3, 13))
    names = ["layers.0.memory.attention", "layers.0.memory.read", "layers.0.memory.write.value"]
    _, tr = run_with_sites(m, x, record=names)
    A, read, v = (tr[n] for n in names)  # [B, T, H, T], [B, T, H, V], [B, T, H, V]
    assert A.shape == (3, 13, 2, 13)
    o = torch.einsum("bths,bshv->bthv", A, v)
    assert (o - read).abs().max() < 1e-5


def test_state_and_attention_only_on_request():
    m = memory_model("gated_delta")
    x = torch.randint(0, 11, (2, 6))
    _, tr = run_with_sites(m, x, record="*")
    assert "layers.0.memory.state" not in tr.names() and "layers.0.memory.attention" not in tr.names()
    assert {"layers.0.memory.read", "layers.0.memory.decay", "layers.0.memory.write.beta"} <= set(tr.names())
    _, tr = run_with_sites(m, x, record=["layers.0.memory.state"])
    assert tr["layers.0.memory.state"].shape == (2, 6, 2, 8, 8)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_recorded_state_gives_the_read(variant):
    m = memory_model(*variant)
    x = torch.randint(0, 11, (2, 9))
    layer = m.layers[0].mixer
    q = layer._features(m.layers[0].norm(m.embed(x)))[0]  # [B, T, H, K]
    _, tr = run_with_sites(m, x, record=["layers.0.memory.state", "layers.0.memory.read"])
    S = tr["layers.0.memory.state"]  # [B, T, H, K, V]
    assert (torch.einsum("bthkv,bthk->bthv", S, q) - tr["layers.0.memory.read"]).abs().max() < 1e-5


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_zeroing_state_forgets_the_past(variant):
    """Zeroing S_t leaves the memory as if the sequence had started at t+1 (no conv, so nothing else carries over)."""
    m = memory_model(*variant)
    x = torch.randint(0, 11, (2, 12))
    t = 4
    _, clean = run_with_sites(m, x, record=["layers.0.memory.read"])
    _, tr = run_with_sites(m, x, record=["layers.0.memory.read"],
                           interventions=[Intervention("layers.0.memory.state", 0.0, steps=[t])])
    _, fresh = run_with_sites(m, x[:, t + 1:], record=["layers.0.memory.read"])
    read = tr["layers.0.memory.read"]
    # (the state intervention runs the recurrence, the clean run the chunked form: equal to rounding)
    assert (read[:, :t] - clean["layers.0.memory.read"][:, :t]).abs().max() < 1e-5
    assert read[:, t].abs().max() == 0
    assert (read[:, t + 1:] - fresh["layers.0.memory.read"]).abs().max() < 1e-5


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v[0] in ("retnet", "gla", "gated_delta")],
                         ids=["retnet", "gla-scalar", "gla-vector", "gated_delta"])
def test_zero_decay_intervention_same_in_both_modes(variant):
    """A forced decay of 0 is log -inf in the chunked form; it must match the recurrence."""
    x = torch.randint(0, 11, (2, 10))
    reads = {}
    for mode in ("chunked", "recurrent"):
        m = memory_model(*variant, mode=mode)
        _, tr = run_with_sites(m, x, record=["layers.0.memory.read"],
                               interventions=[Intervention("layers.0.memory.decay", 0.0, steps=[5])])
        reads[mode] = tr["layers.0.memory.read"]
    assert torch.isfinite(reads["chunked"]).all()
    assert (reads["chunked"] - reads["recurrent"]).abs().max() < 1e-5
    # and decay 0 at step 5 means nothing written before 5 is read from 5 on
    _, fresh = run_with_sites(memory_model(*variant), x[:, 5:], record=["layers.0.memory.read"])
    assert (reads["chunked"][:, 5:] - fresh["layers.0.memory.read"]).abs().max() < 1e-5


@pytest.mark.parametrize("variant", [("linear", "scalar"), ("gated_delta", "scalar")], ids=["linear", "gated_delta"])
def test_attention_intervention_replaces_the_read(variant):
    m = memory_model(*variant)
    x = torch.randint(0, 11, (2, 8))
    name = "layers.0.memory.attention"
    clean, tr = run_with_sites(m, x, record=[name, "layers.0.memory.write.value"])
    same, _ = run_with_sites(m, x, interventions=[Intervention(name, tr[name])])
    assert (same - clean).abs().max() < 1e-5
    # attending only to the current step reads v_t
    eye = torch.eye(8).reshape(1, 8, 1, 8).expand(2, 8, 2, 8)
    _, tr2 = run_with_sites(m, x, record=["layers.0.memory.read"], interventions=[Intervention(name, eye)])
    assert (tr2["layers.0.memory.read"] - tr["layers.0.memory.write.value"]).abs().max() < 1e-6


def test_retnet_decays_are_fixed_per_head():
    m = memory_model("retnet")
    _, tr = run_with_sites(m, torch.randint(0, 11, (1, 3)), record=["layers.0.memory.decay"])
    assert torch.allclose(tr["layers.0.memory.decay"][0, 0], torch.tensor([1 - 2 ** -5, 1 - 2 ** -6]))


def test_state_and_attention_interventions_together_are_refused():
    m = memory_model("delta")
    ivs = [Intervention("layers.0.memory.state", 0.0, steps=[1]), Intervention("layers.0.memory.attention", 0.0)]
    with pytest.raises(ValueError, match="ambiguous"):
        run_with_sites(m, torch.randint(0, 11, (1, 4)), interventions=ivs)
