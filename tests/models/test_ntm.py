"""NTM: addressing functions against step-by-step references, sites, interventions."""
import math

import pytest
import torch

from mnemoscope.models import Intervention, build_model, hooks, run_with_sites
from mnemoscope.models.ntm import (
    NTM,
    NTMConfig,
    address,
    content_weights,
    head_activations,
    interpolate,
    read,
    sharpen,
    shift,
    write,
)

# -- plain per-row, per-head references ------------------------------------------------------


def ref_content(memory, key, beta):
    B, H, N = key.shape[0], key.shape[1], memory.shape[1]
    out = torch.zeros(B, H, N)
    for b in range(B):
        for h in range(H):
            k = key[b, h] + 1e-16
            scores = []
            for n in range(N):
                m = memory[b, n] + 1e-16
                cos = float((m * k).sum()) / (max(float(m.norm()), 1e-8) * max(float(k.norm()), 1e-8))
                scores.append(float(beta[b, h, 0]) * cos)
            top = max(scores)
            e = [math.exp(s - top) for s in scores]
            out[b, h] = torch.tensor([v / sum(e) for v in e])
    return out


def ref_interpolate(w_prev, w_c, g):
    out = torch.zeros_like(w_c)
    for b in range(w_c.shape[0]):
        for h in range(w_c.shape[1]):
            out[b, h] = g[b, h, 0] * w_c[b, h] + (1 - g[b, h, 0]) * w_prev[b, h]
    return out


def ref_shift(w, s):
    B, H, N = w.shape
    S = (s.shape[-1] - 1) // 2
    out = torch.zeros_like(w)
    for b in range(B):
        for h in range(H):
            for i in range(N):
                # README order for S=1: s0 * w[i-1] + s1 * w[i] + s2 * w[i+1]
                out[b, h, i] = sum(float(s[b, h, k]) * float(w[b, h, (i + k - S) % N]) for k in range(2 * S + 1))
    return out


def ref_sharpen(w, gamma):
    out = torch.zeros_like(w)
    for b in range(w.shape[0]):
        for h in range(w.shape[1]):
            p = w[b, h] ** gamma[b, h, 0]
            out[b, h] = p / (p.sum() + 1e-16)
    return out


def ref_read(memory, w):
    B, H, M = w.shape[0], w.shape[1], memory.shape[2]
    out = torch.zeros(B, H, M)
    for b in range(B):
        for h in range(H):
            for n in range(memory.shape[1]):
                out[b, h] += w[b, h, n] * memory[b, n]
    return out


def ref_write(memory, w, e, a):
    out = memory.clone()
    for b in range(memory.shape[0]):
        keep = torch.ones_like(memory[b])
        added = torch.zeros_like(memory[b])
        for h in range(w.shape[1]):
            keep = keep * (1 - torch.outer(w[b, h], e[b, h]))
            added = added + torch.outer(w[b, h], a[b, h])
        out[b] = memory[b] * keep + added
    return out


SHAPES = [(1, 1, 4, 3), (2, 3, 8, 5), (3, 2, 17, 20), (2, 1, 128, 20), (1, 2, 3, 2)]


def _inputs(B, H, N, M, S=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    mem = torch.randn(B, N, M, generator=g)
    key = torch.randn(B, H, M, generator=g)
    beta = torch.rand(B, H, 1, generator=g) * 10
    w_prev = torch.softmax(torch.randn(B, H, N, generator=g), -1)
    w_c = torch.softmax(torch.randn(B, H, N, generator=g) * 3, -1)
    gate = torch.rand(B, H, 1, generator=g)
    s = torch.softmax(torch.randn(B, H, 2 * S + 1, generator=g), -1)
    gamma = 1 + torch.rand(B, H, 1, generator=g) * 5
    e = torch.rand(B, H, M, generator=g)
    a = torch.randn(B, H, M, generator=g)
    return dict(mem=mem, key=key, beta=beta, w_prev=w_prev, w_c=w_c, gate=gate, s=s, gamma=gamma, e=e, a=a)


@pytest.mark.parametrize("B,H,N,M", SHAPES)
def test_addressing_parity(B, H, N, M):
    d = _inputs(B, H, N, M)
    checks = {
        "content_weights": (content_weights(d["mem"], d["key"], d["beta"]), ref_content(d["mem"], d["key"], d["beta"])),
        "interpolate": (interpolate(d["w_prev"], d["w_c"], d["gate"]), ref_interpolate(d["w_prev"], d["w_c"], d["gate"])),
        "shift": (shift(d["w_c"], d["s"]), ref_shift(d["w_c"], d["s"])),
        "sharpen": (sharpen(d["w_c"], d["gamma"]), ref_sharpen(d["w_c"], d["gamma"])),
        "read": (read(d["mem"], d["w_c"]), ref_read(d["mem"], d["w_c"])),
        "write": (write(d["mem"], d["w_c"], d["e"], d["a"]), ref_write(d["mem"], d["w_c"], d["e"], d["a"])),
    }
    for name, (got, ref) in checks.items():
        assert got.shape == ref.shape, name
        assert (got - ref).abs().max() < 1e-6, name


@pytest.mark.parametrize("S,N", [(2, 9), (3, 5), (0, 4)])
def test_shift_parity_wider_ranges(S, N):
    d = _inputs(2, 2, N, 3, S=S)
    assert (shift(d["w_c"], d["s"]) - ref_shift(d["w_c"], d["s"])).abs().max() < 1e-6


def test_address_chain_is_composition_and_a_distribution():
    d = _inputs(3, 2, 16, 6)
    w = address(d["mem"], d["w_prev"], d["key"], d["beta"], d["gate"], d["s"], d["gamma"])
    ref = ref_sharpen(ref_shift(ref_interpolate(d["w_prev"], ref_content(d["mem"], d["key"], d["beta"]), d["gate"]), d["s"]), d["gamma"])
    assert (w - ref).abs().max() < 1e-6
    assert torch.allclose(w.sum(-1), torch.ones(3, 2), atol=1e-5) and (w >= 0).all()


def test_shift_moves_focus_as_documented():
    w = torch.zeros(1, 1, 5)
    w[0, 0, 2] = 1
    s = torch.tensor([[[1.0, 0.0, 0.0]]])  # s[0] weights w[i-1]: focus moves forward
    assert shift(w, s)[0, 0].argmax() == 3
    assert shift(w, s.flip(-1))[0, 0].argmax() == 1
    w[0, 0] = 0
    w[0, 0, 4] = 1
    assert shift(w, s)[0, 0].argmax() == 0  # circular


def test_head_activations_styles():
    M, S3 = 4, 3
    raw = torch.randn(2, 1, M + 1 + 1 + S3 + 1 + 2 * M)
    k, beta, g, s, gamma, e, a = torch.split(raw, [M, 1, 1, S3, 1, M, M], -1)
    old = head_activations(raw, M, S3, "pytorch-ntm-2017", writes=True)
    assert torch.equal(old["key"], k.relu()) and torch.equal(old["beta"], beta.relu())
    assert torch.equal(old["s"], torch.softmax(s.relu(), -1)) and torch.equal(old["gamma"], 1 + gamma.relu())
    assert torch.equal(old["erase"], e.relu()) and torch.equal(old["add"], a.relu()) and torch.equal(old["gate"], g.sigmoid())
    new = head_activations(raw, M, S3, "standard", writes=True)
    assert torch.equal(new["key"], k) and torch.allclose(new["beta"], torch.nn.functional.softplus(beta))
    assert torch.allclose(new["erase"], e.sigmoid()) and torch.allclose(new["add"], a.tanh())
    assert (new["gamma"] >= 1).all()


# -- the model -------------------------------------------------------------------------------

def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(input_size=5, output_size=4, controller_size=16, memory_slots=12, memory_width=6,
               read_heads=2, write_heads=2, memory_init="random")
    cfg.update(kw)
    m = NTM(NTMConfig(**cfg))
    # an untrained NTM barely moves its focus; sharpen the heads so the memory matters
    with torch.no_grad():
        m.read_head.weight.mul_(3)
        m.write_head.weight.mul_(3)
    return m.eval()


def test_registry_and_config_validation():
    m = build_model("ntm", dict(input_size=3, output_size=2, controller_size=8, memory_slots=4, memory_width=3))
    assert isinstance(m, NTM) and m(torch.randn(2, 5, 3)).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="memory_init"):
        NTMConfig(memory_init="zeros")
    with pytest.raises(ValueError, match="head_activation"):
        NTMConfig(head_activation="tanh")
    with pytest.raises(ValueError, match="write_heads"):
        NTMConfig(write_heads=0)
    with pytest.raises(ValueError, match="unknown keys"):
        build_model("ntm", dict(memory_size=3))


def test_sites_shapes_and_matrix_only_on_request():
    m = tiny()
    x = torch.randn(3, 7, 5)
    y, trace = run_with_sites(m, x, record="*")
    assert y.shape == (3, 7, 4)
    assert "memory.matrix" not in trace.names()
    assert trace["memory.read"].shape == (3, 7, 2, 6)
    assert trace["memory.read_weights"].shape == (3, 7, 2, 12)
    assert trace["memory.write_weights"].shape == (3, 7, 2, 12)
    assert trace["memory.erase"].shape == trace["memory.add"].shape == (3, 7, 2, 6)
    assert trace["controller.output"].shape == (3, 7, 16)
    for name in ("memory.read_weights", "memory.write_weights"):
        assert torch.allclose(trace[name].sum(-1), torch.ones(3, 7, 2), atol=1e-5)

    calls = []
    original = m.site

    def counting_site(name, value, t):
        calls.append(name)
        return original(name, value, t)

    m.site = counting_site
    try:
        run_with_sites(m, x, record="*")
        m(x)
        assert "memory.matrix" not in calls
        _, asked = run_with_sites(m, x, record=["memory.matrix", "memory.write_weights", "memory.erase", "memory.add"])
        assert calls.count("memory.matrix") == 7
    finally:
        del m.site
    mat = asked["memory.matrix"]
    assert mat.shape == (3, 7, 12, 6)
    # recorded after the write: step t's matrix is step t-1's matrix written with step t's heads
    prev = m.initial_memory(3)
    for t in range(7):
        expect = write(prev, asked["memory.write_weights"][:, t], asked["memory.erase"][:, t], asked["memory.add"][:, t])
        assert (mat[:, t] - expect).abs().max() < 1e-6
        prev = mat[:, t]
    assert torch.equal(run_with_sites(m, x, record=["memory.matrix"])[0], m(x))


def test_component_groups_cover_parameters_once():
    for init in ("constant", "learned", "random"):
        m = tiny(memory_init=init)
        groups = m.component_groups()
        assert set(groups) == {"memory", "controller", "output"}
        for name, _ in m.named_parameters():
            owners = [g for g, prefixes in groups.items() if any(name == p or name.startswith(p + ".") for p in prefixes)]
            assert len(owners) == 1, (name, owners)
        assert ("memory_bias" in dict(m.named_parameters())) == (init == "learned")
    assert torch.equal(tiny(memory_init="constant").memory_bias, torch.full((12, 6), 1e-6))


@pytest.mark.parametrize("t", [0, 3, 6])
def test_read_intervention_changes_outputs_from_t_on(t):
    m = tiny()
    x = torch.randn(2, 9, 5)
    clean = m(x)
    y, _ = run_with_sites(m, x, interventions=[Intervention("memory.read", 0.0, steps=[t])])
    assert torch.equal(y[:, :t], clean[:, :t])
    for s in range(t, 9):  # at t through the output layer, after t through the controller input
        assert not torch.equal(y[:, s], clean[:, s]), s


def test_controller_output_intervention_leaves_recurrence_alone():
    m = tiny()
    x = torch.randn(2, 8, 5)
    clean = m(x)
    y, trace = run_with_sites(m, x, record=["memory.read"], interventions=[Intervention("controller.output", 0.0, steps=[3])])
    _, clean_trace = run_with_sites(m, x, record=["memory.read"])
    assert not torch.equal(y[:, 3], clean[:, 3])
    others = [s for s in range(8) if s != 3]
    assert torch.equal(y[:, others], clean[:, others])
    assert torch.equal(trace["memory.read"], clean_trace["memory.read"])


def test_batched_interventions_equal_separate_runs():
    m = tiny()
    T = 8
    x = torch.randn(1, T, 5).expand(T, T, 5)
    ivs = [Intervention("memory.read", 0.0, steps=[t], rows=[t]) for t in range(T)]
    batched, _ = run_with_sites(m, x, interventions=ivs)
    for t in range(T):
        single, _ = run_with_sites(m, x[:1], interventions=[Intervention("memory.read", 0.0, steps=[t])])
        assert (batched[t] - single[0]).abs().max() < 1e-5


def test_read_weights_intervention_feeds_next_step():
    m = tiny(read_heads=1)
    x = torch.randn(1, 5, 5)
    focus = torch.zeros(1, 12)
    focus[0, 7] = 1
    with hooks(m, record=["memory.read_weights"], interventions=[Intervention("memory.read_weights", focus, steps=[2])]) as tr:
        m(x)
    assert torch.equal(tr["memory.read_weights"][0, 2], focus)
    _, clean = run_with_sites(m, x, record=["memory.read_weights"])
    assert not torch.equal(tr["memory.read_weights"][0, 3], clean["memory.read_weights"][0, 3])


def test_bypass_dropout_trains_only():
    m = tiny(bypass_dropout=0.999)
    x = torch.randn(4, 6, 5)
    eval_out = m(x)
    m.eval()
    assert torch.equal(m(x), eval_out)
    no_bypass, _ = run_with_sites(m, x, interventions=[Intervention("controller.output", 0.0)])
    m.train()
    torch.manual_seed(1)
    assert (m(x) - no_bypass).abs().max() < 1e-6  # keep probability 0.001: every row dropped
    m.config.bypass_dropout = 0.0
    assert torch.allclose(m(x), eval_out)


@pytest.mark.parametrize("activation", ["standard", "pytorch-ntm-2017"])
def test_gradients_reach_every_group(activation):
    m = tiny(head_activation=activation, memory_init="learned", controller_layers=2).train()
    x = torch.randn(2, 6, 5)
    m(x).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.memory_bias.grad.abs().sum() > 0 and m.read_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("t", [0, 3, 6])
def test_controller_state_intervention_changes_outputs_from_t_on(t):
    m = tiny(controller_layers=2)
    x = torch.randn(2, 9, 5)
    clean, tr = run_with_sites(m, x, record=["controller.state"])
    assert tr["controller.state"].shape == (2, 9, 2, 2, 16)  # [B, T, layers, (h, c), H]
    # step 0 enters from the learned initial state
    assert torch.equal(tr["controller.state"][0, 0, :, 0], m.controller.h0)
    y, _ = run_with_sites(m, x, interventions=[Intervention("controller.state", 0.0, steps=[t])])
    assert torch.equal(y[:, :t], clean[:, :t])
    assert not torch.equal(y[:, t], clean[:, t])
    assert torch.equal(run_with_sites(m, x, record=["controller.state"])[0], m(x))


def test_controller_state_batched_interventions_equal_separate_runs():
    m = tiny()
    T = 6
    x = torch.randn(1, T, 5).expand(T, T, 5)
    layer_c = torch.zeros(1, 2, 1, dtype=torch.bool)
    layer_c[0, 1] = True  # only c
    ivs = [Intervention("controller.state", 0.0, steps=[t], rows=[t], elements=layer_c) for t in range(T)]
    batched, _ = run_with_sites(m, x, interventions=ivs)
    for t in range(T):
        single, _ = run_with_sites(m, x[:1], interventions=[Intervention("controller.state", 0.0, steps=[t],
                                                                          elements=layer_c)])
        assert (batched[t] - single[0]).abs().max() < 1e-5
