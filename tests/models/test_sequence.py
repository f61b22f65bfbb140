"""The stacked sequence model: sliding-window attention, causality of interventions, batching, helpers."""
import math

import pytest
import torch

from mnemoscope.models import Intervention, build_model, run_with_sites
from mnemoscope.models.attention import SlidingWindowAttention
from mnemoscope.models.sequence import SequenceModel, is_memory_site

VARIANTS = [("linear", "scalar"), ("retnet", "scalar"), ("gla", "scalar"), ("gla", "vector"),
            ("delta", "scalar"), ("gated_delta", "scalar")]
VARIANT_IDS = [r if r != "gla" else f"gla-{g}" for r, g in VARIANTS]


def maxabs(x):
    return float(x.detach().abs().max()) if x.numel() else 0.0


def model(blocks, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=13, output_size=7, d_model=16, blocks=blocks, heads=2, window=3, chunk_size=4,
               ssm_d_state=4)
    cfg.update(kw)
    return build_model("sequence", cfg)


# -- sliding-window attention ---------------------------------------------------------------------
def rope_naive(x, base=10000.0):
    """x [T, D]: rotate the pairs (x_i, x_{i+D/2}) at position p by angle p * base^(-i/(D/2))."""
    T, D = x.shape
    half = D // 2
    out = x.clone()
    for p in range(T):
        for i in range(half):
            a = p * base ** (-i / half)
            c, s = math.cos(a), math.sin(a)
            out[p, i] = x[p, i] * c - x[p, i + half] * s
            out[p, i + half] = x[p, i] * s + x[p, i + half] * c
    return out


def attention_naive(layer, x):
    """Per batch row, head and query: softmax over the keys t-W+1..t, written as loops."""
    B, T, _ = x.shape
    H, D, W = layer.heads, layer.d_head, layer.window
    qkv = layer.qkv(x)
    if layer.conv_size:  # the short causal conv, per channel: inputs t-K+1..t (zeros before the start)
        K, w, bias = layer.conv_size, layer.conv.weight[:, 0], layer.conv.bias
        conv = torch.zeros_like(qkv)
        for t in range(T):
            for j in range(K):
                s = t - (K - 1) + j
                if s >= 0:
                    conv[:, t] += w[:, j] * qkv[:, s]
        qkv = conv + bias
    qkv = qkv.view(B, T, 3, H, D)
    out = torch.zeros(B, T, H, D)
    for b in range(B):
        for h in range(H):
            q, k, v = qkv[b, :, 0, h], qkv[b, :, 1, h], qkv[b, :, 2, h]
            if layer.rope:
                q, k = rope_naive(q), rope_naive(k)
            for t in range(T):
                keys = range(max(0, t - W + 1), t + 1)
                scores = torch.stack([q[t] @ k[s] / math.sqrt(D) for s in keys])
                p = scores.softmax(0)
                out[b, t, h] = sum(p[j] * v[s] for j, s in enumerate(keys))
    return layer.o_proj(out.reshape(B, T, H * D))


class _Recorder:
    """A scope that asks for the pattern, so the layer takes its explicit-softmax path."""

    def __init__(self):
        self.values = {}

    def seq(self, name, value):
        self.values[name] = value
        return value

    def wants(self, name):
        return True

    def intervenes(self, name):
        return False


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit"])
@pytest.mark.parametrize("rope, conv", [(True, 0), (False, 0), (True, 3)])
@pytest.mark.parametrize("B, T, H, W", [(1, 1, 1, 1), (2, 9, 2, 1), (2, 9, 2, 3), (1, 12, 3, 20)])
def test_sliding_window_matches_naive_loop(B, T, H, W, rope, conv, explicit):
    torch.manual_seed(0)
    layer = SlidingWindowAttention(12, heads=H, window=W, d_head=4, rope=rope, conv_size=conv)
    x = torch.randn(B, T, 12)
    scope = _Recorder() if explicit else None
    y = layer(x, scope)
    assert (y - attention_naive(layer, x)).abs().max() < 1e-5
    if explicit:
        p = scope.values["attention.pattern"]  # [B, T, H, T]
        assert torch.allclose(p.sum(-1), torch.ones(B, T, H))
        t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
        outside = (s > t) | (s <= t - W)
        assert maxabs(p.permute(0, 2, 1, 3)[:, :, outside]) == 0


def test_attention_conv_is_causal_and_off_by_default():
    plain = model(["attention", "mlp"])
    assert not hasattr(plain.layers[0].mixer, "conv")  # old configs build exactly the old layer
    m = model(["attention", "mlp"], attention_conv_size=4)
    x = torch.randint(0, 13, (2, 10))
    y = m(x)
    changed = x.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 13
    assert maxabs(m(changed)[:, :6] - y[:, :6]) == 0  # outputs before step 6 ignore inputs from 6 on
    assert maxabs(m(changed)[:, 6:] - y[:, 6:]) > 0


def test_rotary_scores_depend_on_offset_only():
    from mnemoscope.models.attention import rotary

    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    rq = rotary(q.expand(1, 1, 10, 8))[0, 0]
    rk = rotary(k.expand(1, 1, 10, 8))[0, 0]
    assert abs(rq[5] @ rk[3] - rq[7] @ rk[5]) < 1e-5
    assert abs(rq[5] @ rk[3] - rq[5] @ rk[4]) > 1e-3


# -- causality and batching -----------------------------------------------------------------------
CAUSAL_CASES = [(dict(rule=r, gate=g), "memory", "layers.0.memory.read") for r, g in VARIANTS] + [
    (dict(), "ssm", "layers.0.ssm.read"),
    (dict(), "attention", "layers.0.attention.heads"),
]


@pytest.mark.parametrize("block_out", [False, True], ids=["layer-read", "block-out"])
@pytest.mark.parametrize("cfg, first, site", CAUSAL_CASES, ids=VARIANT_IDS + ["ssm", "attention"])
def test_intervention_changes_outputs_only_from_t_on(cfg, first, site, block_out):
    m = model([first, "mlp", "memory", "attention"], conv_size=3, **cfg)  # the short conv must stay causal too
    if block_out:
        site = f"layers.0.{first}.out"
    x = torch.randint(0, 13, (2, 11))
    clean, _ = run_with_sites(m, x)
    for t in (0, 5, 10):
        y, _ = run_with_sites(m, x, interventions=[Intervention(site, 0.0, steps=[t])])
        assert maxabs(y[:, :t] - clean[:, :t]) < 1e-6, f"step {t} changed the past"
        # (a fresh SSM's read is ~dt ~ 1e-3 small, so any change counts)
        assert maxabs(y[:, t] - clean[:, t]) > 0, f"zeroing {site} at {t} did nothing at {t}"


def test_batched_interventions_equal_separate_runs():
    m = model(["memory", "attention", "ssm", "mlp"], rule="gated_delta")
    x = torch.randint(0, 13, (1, 10)).expand(8, 10)
    H = 2
    ivs = [
        Intervention("layers.0.memory.read", 0.0, steps=[3]),
        Intervention("layers.0.memory.write.key", lambda v, t: -v, steps=[2, 5]),
        Intervention("layers.0.memory.decay", 0.0, steps=[4]),
        Intervention("layers.0.memory.state", 0.0, steps=[6]),
        Intervention("layers.1.attention.pattern", torch.full((1, 10, H, 10), 0.1)),
        Intervention("layers.2.ssm.read", 1.0, steps=[1, 7]),
        Intervention("layers.3.mlp.out", 0.0),
        Intervention("layers.0.memory.out", 0.5, steps=[8]),
    ]
    batched_ivs = [Intervention(iv.site, iv.value, steps=iv.steps, rows=[i]) for i, iv in enumerate(ivs)]
    batched, _ = run_with_sites(m, x, interventions=batched_ivs)
    for i, iv in enumerate(ivs):
        single, _ = run_with_sites(m, x[:1], interventions=[iv])
        assert (batched[i] - single[0]).abs().max() < 1e-5, iv.site
    clean, _ = run_with_sites(m, x[:1])
    assert all((batched[i] - clean[0]).abs().max() > 1e-4 for i in range(len(ivs)))


def test_costly_sites_only_on_request():
    m = model(["memory", "ssm", "attention"])
    x = torch.randint(0, 13, (2, 5))
    _, tr = run_with_sites(m, x, record="*")
    names = set(tr.names())
    for costly in ("layers.0.memory.state", "layers.0.memory.attention", "layers.1.ssm.state", "layers.1.ssm.attention"):
        assert costly not in names
    assert {"layers.0.memory.read", "layers.1.ssm.read", "layers.2.attention.pattern", "layers.0.memory.out",
            "layers.2.attention.out", "output"} <= names
    _, tr = run_with_sites(m, x, record=["layers.0.memory.state"])
    assert tr.names() == ["layers.0.memory.state"]


def test_modes_agree_in_the_model():
    x = torch.randint(0, 13, (3, 17))
    y1, _ = run_with_sites(model(["memory", "mlp", "memory"], mode="chunked", rule="delta"), x)
    y2, _ = run_with_sites(model(["memory", "mlp", "memory"], mode="recurrent", rule="delta"), x)
    assert (y1 - y2).abs().max() < 1e-5


# -- helpers for analysis ---------------------------------------------------------------------------
def test_ablation_is_one_call_each():
    m = model(["memory", "attention", "ssm", "mlp"])
    x = torch.randint(0, 13, (2, 8))
    assert m.block_sites("memory") == ["layers.0.memory.out", "layers.2.ssm.out"]
    assert m.block_sites("attention") == ["layers.1.attention.out"]
    no_memory, _ = run_with_sites(m, x, interventions=m.ablation("memory"))
    no_attention, _ = run_with_sites(m, x, interventions=m.ablation("attention"))
    # the same as silencing those layers' output projections
    with torch.no_grad():
        saved = [p.clone() for p in (m.layers[0].mixer.o_proj.weight, m.layers[2].mixer.out_proj.weight)]
        m.layers[0].mixer.o_proj.weight.zero_()
        m.layers[2].mixer.out_proj.weight.zero_()
        assert (m(x) - no_memory).abs().max() < 1e-6
        m.layers[0].mixer.o_proj.weight.copy_(saved[0])
        m.layers[2].mixer.out_proj.weight.copy_(saved[1])
        m.layers[1].mixer.o_proj.weight.zero_()
        assert (m(x) - no_attention).abs().max() < 1e-6


def test_site_kinds_separate_memory_from_local_attention():
    m = model(["memory", "attention", "ssm", "mlp"])
    specs = m.site_specs()
    assert specs["layers.0.memory.out"].kind == "read" and specs["layers.2.ssm.out"].kind == "read"
    assert specs["layers.1.attention.out"].kind == "bypass" and specs["layers.3.mlp.out"].kind == "bypass"
    pattern = specs["layers.1.attention.pattern"]
    assert pattern.kind == "attention" and pattern.distribution and pattern.shape == (2, None)
    assert specs["layers.0.memory.attention"].shape == (2, None) and specs["layers.0.memory.attention"].on_request
    memory = set(m.memory_sites())
    assert "layers.0.memory.attention" in memory and "layers.0.memory.read" in memory
    assert "layers.2.ssm.read" in memory and "layers.2.ssm.skip" not in memory
    assert not any(".attention." in n.replace("memory.attention", "").replace("ssm.attention", "") for n in memory)
    assert not is_memory_site(pattern)


def test_site_roles_name_each_component_once():
    """The reliance design removes components through their roles: memory (a linear-memory block's
    output; inside an SSM block its read, since the block output carries the D skip too), the
    parallel bypass (local attention, the D skip), and never an MLP, which sits in series."""
    m = model(["memory", "attention", "ssm", "mlp"])
    roles = {n: s.role for n, s in m.site_specs().items() if s.role}
    assert roles == {"layers.0.memory.out": "memory", "layers.1.attention.out": "bypass",
                     "layers.2.ssm.read": "memory", "layers.2.ssm.skip": "bypass", "layers.3.mlp.out": "series"}
    pure = model(["memory", "mlp", "memory", "mlp"])
    assert not [n for n, s in pure.site_specs().items() if s.role == "bypass"]  # no parallel path


def test_component_groups_partition_parameters():
    m = model(["memory", "attention", "ssm", "mlp", "memory"])
    groups = m.component_groups()
    assert set(groups) == {"memory", "attention", "mlp", "embedding", "output"}
    for name, _ in m.named_parameters():
        owners = [g for g, prefixes in groups.items() if any(name == p or name.startswith(p + ".") for p in prefixes)]
        assert len(owners) == 1, (name, owners)


def test_bypass_dropout_drops_whole_non_memory_contributions_in_training_only():
    m = model(["memory", "mlp"], bypass_dropout=0.5)
    x = torch.randint(0, 13, (64, 6))
    m.eval()
    _, ev = run_with_sites(m, x, record=["layers.1.mlp.out", "layers.0.memory.out"])
    m.train()
    torch.manual_seed(1)
    _, tr = run_with_sites(m, x, record=["layers.1.mlp.out", "layers.0.memory.out"])
    assert torch.equal(tr["layers.0.memory.out"], ev["layers.0.memory.out"])  # memory is never dropped
    mlp, ref = tr["layers.1.mlp.out"], ev["layers.1.mlp.out"]
    dropped = mlp.abs().amax(dim=(1, 2)) == 0
    assert 10 < int(dropped.sum()) < 54
    assert torch.allclose(mlp[~dropped], 2 * ref[~dropped], atol=1e-6)


def test_continuous_input_and_attention_first_order():
    torch.manual_seed(0)
    m = build_model("sequence", dict(input_size=5, output_size=3, d_model=8, blocks=["attention", "memory"],
                                     heads=2, window=2, rule="gla", gate="vector"))
    y = m(torch.randn(2, 7, 5))
    assert y.shape == (2, 7, 3)
    assert m(torch.randint(0, 5, (2, 7))).shape == (2, 7, 3)  # ids are one-hot encoded


@pytest.mark.parametrize("bad, match", [
    (dict(blocks=["memory", "transformer"]), "each must be one of"),
    (dict(blocks=[]), "each must be one of"),
    (dict(rule="mystery"), "unknown memory rule"),
    (dict(norm="batch"), "unknown norm"),
    (dict(window=0, blocks=["attention"]), "window must be at least 1"),
    (dict(bypass_dropout=1.0), "bypass_dropout"),
    (dict(vocab_size=None), "input_size"),
])
def test_bad_config_is_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        model(["memory"] if "blocks" not in bad else bad.pop("blocks"), **bad)


def test_token_model_rejects_floats():
    with pytest.raises(ValueError, match="token ids"):
        model(["memory"])(torch.randn(1, 3, 13, 2))


def test_checkpoint_round_trip(tmp_path):
    from mnemoscope.models.checkpoints import load_checkpoint, save_checkpoint

    m = model(["memory", "mlp", "attention", "ssm"], rule="retnet")
    x = torch.randint(0, 13, (2, 9))
    m.eval()
    path = save_checkpoint(tmp_path / "seq.safetensors", m, task={"name": "mqar", "params": {}}, step=3)
    loaded = load_checkpoint(path).model
    assert isinstance(loaded, SequenceModel) and loaded.config.blocks == ["memory", "mlp", "attention", "ssm"]
    assert torch.equal(loaded(x), m(x))
