"""DNC: each vectorised memory op against a plain loop reference, the site contract, the
Csordás & Schmidhuber flags, and a short training run."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from mnemoscope.models import Intervention, build_model, run_with_sites
from mnemoscope.models import dnc as D

SHAPES = [(1, 1, 1, 1), (2, 3, 2, 1), (3, 5, 4, 2), (2, 8, 3, 4), (4, 16, 6, 3)]  # (batch, N, W, R)
TOL = 1e-6


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand(*shape, g, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)


def randn(*shape, g):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def subdist(*shape, g):
    """Non-negative rows summing to a random mass <= 1, like the DNC's weightings."""
    return torch.softmax(randn(*shape, g=g), -1) * rand(*shape[:-1], 1, g=g)


def maxdiff(a, b) -> float:
    return (torch.as_tensor(a, dtype=torch.float64) - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# Step-by-step references (python loops over scalars, straight from the paper's equations)
# ---------------------------------------------------------------------------------------------
def ref_content(memory, keys, strengths, mask=None):
    B, N, W = memory.shape
    H = keys.shape[1]
    out = torch.zeros(B, H, N, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            scores = []
            for n in range(N):
                s = [mask[b, h, w].item() if mask is not None else 1.0 for w in range(W)]
                m = [memory[b, n, w].item() * s[w] for w in range(W)]
                k = [keys[b, h, w].item() * s[w] for w in range(W)]
                dot = sum(m[w] * k[w] for w in range(W))
                nm = math.sqrt(sum(v * v for v in m))
                nk = math.sqrt(sum(v * v for v in k))
                scores.append(strengths[b, h].item() * dot / (nm * nk + D.EPS))
            top = max(scores)
            e = [math.exp(s - top) for s in scores]
            for n in range(N):
                out[b, h, n] = e[n] / sum(e)
    return out


def ref_retention(free, prev_read):
    B, R, N = prev_read.shape
    out = torch.ones(B, N, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            psi = 1.0
            for r in range(R):
                psi *= 1.0 - free[b, r].item() * prev_read[b, r, n].item()
            out[b, n] = psi
    return out


def ref_usage(usage, prev_write, psi):
    out = torch.zeros_like(usage)
    for b in range(usage.shape[0]):
        for n in range(usage.shape[1]):
            u, w = usage[b, n].item(), prev_write[b, n].item()
            out[b, n] = (u + w - u * w) * psi[b, n].item()
    return out


def ref_allocation(usage):
    """The paper's loop: walk the free list (slots by ascending usage), hand each slot what the
    less-used slots before it left over."""
    B, N = usage.shape
    out = torch.zeros(B, N, dtype=torch.float64)
    for b in range(B):
        u = [usage[b, n].item() for n in range(N)]
        free_list = sorted(range(N), key=lambda n: u[n])  # stable: ties by slot index
        taken = 1.0
        for j in free_list:
            out[b, j] = (1.0 - u[j]) * taken
            taken *= u[j]
    return out


def ref_write_weighting(alloc, content, ga, gw):
    out = torch.zeros_like(alloc)
    for b in range(alloc.shape[0]):
        for n in range(alloc.shape[1]):
            a, c = alloc[b, n].item(), content[b, n].item()
            out[b, n] = gw[b, 0].item() * (ga[b, 0].item() * a + (1 - ga[b, 0].item()) * c)
    return out


def ref_write_memory(memory, ww, erase, add, psi=None):
    B, N, W = memory.shape
    out = torch.zeros_like(memory)
    for b in range(B):
        for n in range(N):
            for w in range(W):
                keep = 1.0 - ww[b, n].item() * erase[b, w].item()
                if psi is not None:
                    keep *= psi[b, n].item()
                out[b, n, w] = memory[b, n, w].item() * keep + ww[b, n].item() * add[b, w].item()
    return out


def ref_link(link, prec, ww):
    B, N, _ = link.shape
    out = torch.zeros_like(link)
    for b in range(B):
        for i in range(N):
            for j in range(N):
                if i == j:
                    continue
                wi, wj = ww[b, i].item(), ww[b, j].item()
                out[b, i, j] = (1 - wi - wj) * link[b, i, j].item() + wi * prec[b, j].item()
    return out


def ref_precedence(prec, ww):
    out = torch.zeros_like(prec)
    for b in range(prec.shape[0]):
        total = sum(ww[b].tolist())
        for n in range(prec.shape[1]):
            out[b, n] = (1 - total) * prec[b, n].item() + ww[b, n].item()
    return out


def ref_directional(link, prev_read):
    B, R, N = prev_read.shape
    fwd = torch.zeros(B, R, N, dtype=torch.float64)
    bwd = torch.zeros(B, R, N, dtype=torch.float64)
    for b in range(B):
        for r in range(R):
            for i in range(N):
                fwd[b, r, i] = sum(link[b, i, j].item() * prev_read[b, r, j].item() for j in range(N))
                bwd[b, r, i] = sum(link[b, j, i].item() * prev_read[b, r, j].item() for j in range(N))
    return fwd, bwd


def ref_sharpen(weights, exponent):
    B, R, N = weights.shape
    out = torch.zeros_like(weights)
    for b in range(B):
        for r in range(R):
            p = [(weights[b, r, n].item() + D.EPS) ** exponent[b, r].item() for n in range(N)]
            for n in range(N):
                out[b, r, n] = p[n] / sum(p)
    return out


def ref_read_weighting(bwd, content, fwd, modes):
    out = torch.zeros_like(content)
    B, R, N = content.shape
    for b in range(B):
        for r in range(R):
            pb, pc, pf = (modes[b, r, k].item() for k in range(3))
            for n in range(N):
                out[b, r, n] = pb * bwd[b, r, n].item() + pc * content[b, r, n].item() + pf * fwd[b, r, n].item()
    return out


def ref_read(memory, read_w):
    B, N, W = memory.shape
    R = read_w.shape[1]
    out = torch.zeros(B, R, W, dtype=torch.float64)
    for b in range(B):
        for r in range(R):
            for w in range(W):
                out[b, r, w] = sum(memory[b, n, w].item() * read_w[b, r, n].item() for n in range(N))
    return out


# ---------------------------------------------------------------------------------------------
# Parity grid
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,N,W,R", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_content_weighting_parity(B, N, W, R, masked):
    g = gen(1)
    memory, keys, strengths = randn(B, N, W, g=g), randn(B, R, W, g=g), 1 + 5 * rand(B, R, g=g)
    memory[:, 0] = 0.0  # an empty slot: cosine must stay finite
    mask = rand(B, R, W, g=g) if masked else None
    got = D.content_weighting(memory, keys, strengths, mask)
    assert maxdiff(got, ref_content(memory, keys, strengths, mask)) < TOL
    assert maxdiff(got.sum(-1), torch.ones(B, R)) < TOL


@pytest.mark.parametrize("B,N,W,R", SHAPES)
def test_retention_and_usage_parity(B, N, W, R):
    g = gen(2)
    free, prev_read = rand(B, R, g=g), subdist(B, R, N, g=g)
    usage, prev_write = rand(B, N, g=g), subdist(B, N, g=g)
    psi = D.retention(free, prev_read)
    assert maxdiff(psi, ref_retention(free, prev_read)) < TOL
    assert maxdiff(D.update_usage(usage, prev_write, psi), ref_usage(usage, prev_write, psi)) < TOL


@pytest.mark.parametrize("B,N,W,R", SHAPES)
def test_allocation_parity(B, N, W, R):
    g = gen(3)
    usage = rand(B, N, g=g)
    usage[0, : N // 2] = 0.0  # ties (fresh memory) must follow the stable free list
    if N > 2:
        usage[-1, 1] = usage[-1, 2]
    got = D.allocation(usage)
    assert maxdiff(got, ref_allocation(usage)) < TOL
    assert (got >= 0).all()
    assert maxdiff(got.sum(-1), 1 - usage.prod(-1)) < TOL


def test_allocation_fresh_memory_goes_to_first_slot():
    a = D.allocation(torch.zeros(2, 5))
    assert torch.equal(a, torch.tensor([[1.0, 0, 0, 0, 0]] * 2))


@pytest.mark.parametrize("B,N,W,R", SHAPES)
@pytest.mark.parametrize("dealloc", [False, True])
def test_write_parity(B, N, W, R, dealloc):
    g = gen(4)
    alloc, content = subdist(B, N, g=g), torch.softmax(randn(B, N, g=g), -1)
    ga, gw = rand(B, 1, g=g), rand(B, 1, g=g)
    ww = D.write_weighting(alloc, content, ga, gw)
    assert maxdiff(ww, ref_write_weighting(alloc, content, ga, gw)) < TOL
    memory, erase, add = randn(B, N, W, g=g), rand(B, W, g=g), randn(B, W, g=g)
    psi = rand(B, N, g=g) if dealloc else None
    got = D.write_memory(memory, ww, erase, add, psi)
    assert maxdiff(got, ref_write_memory(memory, ww, erase, add, psi)) < TOL


@pytest.mark.parametrize("B,N,W,R", SHAPES)
def test_link_and_precedence_parity(B, N, W, R):
    g = gen(5)
    link, prec, ww = rand(B, N, N, g=g) / N, subdist(B, N, g=g), subdist(B, N, g=g)
    assert maxdiff(D.update_link(link, prec, ww), ref_link(link, prec, ww)) < TOL
    assert maxdiff(D.update_precedence(prec, ww), ref_precedence(prec, ww)) < TOL


@pytest.mark.parametrize("B,N,W,R", SHAPES)
def test_directional_sharpen_and_read_parity(B, N, W, R):
    g = gen(6)
    link, prev_read = rand(B, N, N, g=g) / N, subdist(B, R, N, g=g)
    fwd, bwd = D.directional_weights(link, prev_read)
    rf, rb = ref_directional(link, prev_read)
    assert maxdiff(fwd, rf) < TOL and maxdiff(bwd, rb) < TOL
    exponent = 1 + 4 * rand(B, R, g=g)
    sharp = D.sharpen(fwd, exponent)
    assert maxdiff(sharp, ref_sharpen(fwd, exponent)) < TOL
    assert maxdiff(sharp.sum(-1), torch.ones(B, R)) < TOL
    content, modes = torch.softmax(randn(B, R, N, g=g), -1), torch.softmax(randn(B, R, 3, g=g), -1)
    rw = D.read_weighting(bwd, content, fwd, modes)
    assert maxdiff(rw, ref_read_weighting(bwd, content, fwd, modes)) < TOL
    memory = randn(B, N, W, g=g)
    assert maxdiff(D.read_memory(memory, rw), ref_read(memory, rw)) < TOL


def test_ops_work_in_float32_and_keep_gradients_finite():
    torch.manual_seed(0)
    memory = torch.zeros(2, 4, 3, requires_grad=True)  # an all-zero memory is where norms hit 0
    keys = torch.randn(2, 2, 3, requires_grad=True)
    usage = torch.zeros(2, 4, requires_grad=True)
    w = D.content_weighting(memory, keys, torch.ones(2, 2))
    a = D.allocation(usage)
    (w.sum() + a.pow(2).sum() + D.sharpen(torch.zeros(2, 2, 4), torch.full((2, 2), 3.0)).sum()).backward()
    for t in (memory, keys, usage):
        assert torch.isfinite(t.grad).all()


def test_masking_ignores_masked_features():
    memory = torch.tensor([[[1.0, 0.0], [1.0, 5.0]]])  # slots differ only in feature 1
    key = torch.tensor([[[1.0, -3.0]]])
    mask = torch.tensor([[[1.0, 0.0]]])
    w = D.content_weighting(memory, key, torch.tensor([[10.0]]), mask)
    assert maxdiff(w, torch.tensor([[[0.5, 0.5]]])) < TOL
    assert D.content_weighting(memory, key, torch.tensor([[10.0]]))[0, 0, 0] > 0.99  # unmasked: slot 0


def test_deallocation_clears_freed_slots():
    memory = torch.ones(1, 3, 2)
    psi = torch.tensor([[1.0, 0.0, 0.5]])
    out = D.write_memory(memory, torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1, 2), psi)
    assert torch.equal(out, torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.5, 0.5]]]))


# ---------------------------------------------------------------------------------------------
# The model and its sites
# ---------------------------------------------------------------------------------------------
CFG = dict(input_size=5, output_size=3, controller_size=12, memory_slots=6, memory_width=4, read_heads=2)


def dnc(seed=0, **over):
    torch.manual_seed(seed)
    return build_model("dnc", {**CFG, **over}).eval()


def inputs(B=3, T=8, seed=1):
    return torch.randn(B, T, CFG["input_size"], generator=gen(seed))


def test_record_star_shapes_and_on_request():
    m, x = dnc(), inputs()
    y, trace = run_with_sites(m, x, record="*")
    assert y.shape == (3, 8, 3)
    assert "memory.link" not in trace and "memory.matrix" not in trace
    for name, spec in m.site_specs().items():
        if not spec.on_request:
            assert trace[name].shape == (3, 8, *spec.shape), name
    assert m.site_specs()["memory.read_modes"].axes == ("head", "mode")
    _, trace = run_with_sites(m, x, record=["memory.link", "memory.matrix"])
    assert trace["memory.link"].shape == (3, 8, 6, 6) and trace["memory.matrix"].shape == (3, 8, 6, 4)


def test_unhooked_forward_equals_hooked():
    m, x = dnc(), inputs()
    y, _ = run_with_sites(m, x, record=["*", "memory.link", "memory.matrix"])
    assert torch.equal(m(x), y)


def test_trace_is_consistent_with_reference_ops():
    """The recorded link follows the element-wise reference from the recorded write weights,
    and the recorded reads are M_t^T w^r_t."""
    m, x = dnc(), inputs(B=2, T=6)
    _, tr = run_with_sites(m, x, record=["memory.link", "memory.matrix", "memory.write_weights",
                                         "memory.read_weights", "memory.read"])
    ww = tr["memory.write_weights"][:, :, 0].double()
    link, prec = torch.zeros(2, 6, 6, dtype=torch.float64), torch.zeros(2, 6, dtype=torch.float64)
    for t in range(6):
        link, prec = ref_link(link, prec, ww[:, t]), ref_precedence(prec, ww[:, t])
        assert maxdiff(tr["memory.link"][:, t].double(), link) < 1e-5
        reads = ref_read(tr["memory.matrix"][:, t].double(), tr["memory.read_weights"][:, t].double())
        assert maxdiff(tr["memory.read"][:, t].double(), reads) < 1e-5


@pytest.mark.parametrize("t", [0, 3, 6])
def test_zero_read_changes_outputs_only_from_t(t):
    m, x = dnc(), inputs()
    base, tb = run_with_sites(m, x, record=["controller.output"])
    y, ty = run_with_sites(m, x, record=["controller.output"],
                           interventions=[Intervention("memory.read", 0.0, steps=[t])])
    assert torch.equal(y[:, :t], base[:, :t])
    assert (y[:, t] - base[:, t]).abs().max() > 1e-4  # r_t feeds the output at t ...
    assert (ty["controller.output"][:, t + 1] - tb["controller.output"][:, t + 1]).abs().max() > 1e-4  # ... and h_{t+1}


def test_controller_output_is_only_the_bypass():
    m, x = dnc(), inputs()
    base, tb = run_with_sites(m, x, record=["memory.read"])
    y, ty = run_with_sites(m, x, record=["memory.read"],
                           interventions=[Intervention("controller.output", 0.0, steps=[2])])
    changed = (y - base).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [t == 2 for t in range(8)]
    assert torch.equal(ty["memory.read"], tb["memory.read"])


@pytest.mark.parametrize("site", ["memory.read", "memory.write_weights", "memory.usage", "memory.link"])
def test_batched_interventions_equal_separate_runs(site):
    m = dnc()
    T = 6
    x = inputs(B=1, T=T).expand(T, T, -1)
    ivs = [Intervention(site, 0.0, steps=[t], rows=[t]) for t in range(T)]
    batched, _ = run_with_sites(m, x, interventions=ivs)
    for t in range(T):
        single, _ = run_with_sites(m, x[:1], interventions=[Intervention(site, 0.0, steps=[t])])
        assert (batched[t] - single[0]).abs().max() < 1e-5


def long_trace(**flags):
    m, x = dnc(**flags), 3 * inputs(B=4, T=24, seed=7)
    _, tr = run_with_sites(m, x, record=["*", "memory.link"])
    return tr


@pytest.mark.parametrize("flags", [{}, dict(masking=True, deallocation=True, sharpness=True)])
def test_weightings_are_subdistributions(flags):
    tr = long_trace(**flags)
    for name in ("memory.read_weights", "memory.write_weights", "memory.allocation"):
        v = tr[name]
        assert (v >= 0).all() and (v.sum(-1) <= 1 + 1e-5).all(), name
    assert ((tr["memory.read_modes"].sum(-1) - 1).abs() < 1e-5).all()


def test_read_weights_sum_to_one_with_sharpness():
    tr = long_trace(sharpness=True)
    assert ((tr["memory.read_weights"].sum(-1) - 1).abs() < 1e-5).all()


def test_write_weights_sum_to_one_at_open_gates():
    """w^w is a distribution scaled by the write gate: with g^w = 1, g^a = 0 it is the
    content weighting, which sums to one."""
    g = gen(8)
    content = D.content_weighting(torch.randn(2, 5, 3, generator=g), torch.randn(2, 1, 3, generator=g),
                                  torch.ones(2, 1))[:, 0]
    ww = D.write_weighting(D.allocation(torch.rand(2, 5, generator=g)), content, torch.zeros(2, 1), torch.ones(2, 1))
    assert ((ww.sum(-1) - 1).abs() < 1e-5).all()


@pytest.mark.parametrize("flags", [{}, dict(deallocation=True)])
def test_usage_stays_in_unit_interval(flags):
    u = long_trace(**flags)["memory.usage"]
    assert (u >= 0).all() and (u <= 1).all()
    assert u.max() > 0.1  # the check is not vacuous: memory does get used


def test_link_zero_diagonal_and_rows_at_most_one():
    link = long_trace()["memory.link"]  # [B, T, N, N]
    assert (link.diagonal(dim1=-2, dim2=-1) == 0).all()
    assert (link >= -1e-7).all()
    assert (link.sum(-1) <= 1 + 1e-5).all() and (link.sum(-2) <= 1 + 1e-5).all()
    assert link.sum() > 0


FLAG_GRID = list(itertools.product([False, True], repeat=3))


@pytest.mark.parametrize("masking,deallocation,sharpness", FLAG_GRID)
def test_flags_build_and_run(masking, deallocation, sharpness):
    m = dnc(masking=masking, deallocation=deallocation, sharpness=sharpness, bypass_dropout=0.2).train()
    R, W = CFG["read_heads"], CFG["memory_width"]
    expected = R * W + 3 * W + 5 * R + 3 + (R * W + W if masking else 0) + (2 * R if sharpness else 0)
    assert m.interface.out_features == expected
    y = m(inputs())
    y.pow(2).mean().backward()
    assert torch.isfinite(y).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_flags_change_the_computation():
    x = inputs()
    base = dnc()(x)
    for flag in ("deallocation", "sharpness"):  # same parameters, different memory rule
        assert not torch.allclose(dnc(**{flag: True})(x), base), flag


def test_bypass_dropout_drops_whole_sequences_rescaled():
    m, x = dnc(bypass_dropout=0.5), inputs(B=16)
    dropped, _ = run_with_sites(m, x, interventions=[Intervention("controller.output", 0.0)])
    doubled, _ = run_with_sites(m, x, interventions=[Intervention("controller.output", lambda v, t: 2 * v)])
    assert torch.equal(m(x), m(x))  # eval: no dropout
    m.train()
    torch.manual_seed(3)
    y = m(x)
    is_dropped = (y - dropped).abs().amax(dim=(1, 2)) < 1e-6
    is_kept = (y - doubled).abs().amax(dim=(1, 2)) < 1e-5
    assert (is_dropped ^ is_kept).all()  # every row is one or the other, for the whole sequence
    assert is_dropped.any() and is_kept.any()


def test_component_groups_cover_every_parameter_once():
    m = dnc(masking=True, sharpness=True)
    groups = m.component_groups()
    assert set(groups) == {"memory", "controller", "output"}
    for name, _ in m.named_parameters():
        owners = [g for g, prefixes in groups.items() if any(name.startswith(p + ".") for p in prefixes)]
        assert len(owners) == 1, name


@pytest.mark.parametrize("bad,match", [
    (dict(memory_slots=0), "memory_slots"),
    (dict(read_heads=1.5), "read_heads"),
    (dict(bypass_dropout=1.0), "bypass_dropout"),
    (dict(slots=4), "unknown keys"),
])
def test_bad_config_is_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        build_model("dnc", {**CFG, **bad})


def associative_batch(B=16, pairs=3, bits=4, seed=0):
    """Store `pairs` random (key, value) bit vectors, then query one key: the target is its value."""
    g = gen(seed)
    keys = torch.randint(0, 2, (B, pairs, bits), generator=g).float()
    values = torch.randint(0, 2, (B, pairs, bits), generator=g).float()
    x = torch.zeros(B, pairs + 1, 2 * bits + 2)
    x[:, :pairs, :bits], x[:, :pairs, bits:2 * bits], x[:, :pairs, -2] = keys, values, 1.0
    q = torch.randint(0, pairs, (B,), generator=g)
    rows = torch.arange(B)
    x[:, pairs, :bits], x[:, pairs, -1] = keys[rows, q], 1.0
    return x, values[rows, q]


def test_loss_decreases_on_associative_task():
    x, target = associative_batch()
    torch.manual_seed(0)
    m = build_model("dnc", dict(input_size=x.shape[-1], output_size=target.shape[-1], controller_size=32,
                                memory_slots=8, memory_width=8, read_heads=1))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x)[:, -1], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


@pytest.mark.parametrize("t", [0, 3, 6])
def test_controller_state_changes_outputs_only_from_t(t):
    m, x = dnc(), inputs()
    base, tr = run_with_sites(m, x, record=["controller.state", "controller.output"])
    assert tr["controller.state"].shape == (3, 8, 1, 2, 12)
    # the h entering step t+1 is the h that left step t
    assert torch.equal(tr["controller.state"][:, 1:, 0, 0], tr["controller.output"][:, :-1])
    y, _ = run_with_sites(m, x, interventions=[Intervention("controller.state", 0.5, steps=[t])])  # h0 = c0 = 0
    assert torch.equal(y[:, :t], base[:, :t])
    assert (y[:, t] - base[:, t]).abs().max() > 1e-4


def test_controller_state_batched_interventions_equal_separate_runs():
    m = dnc()
    T = 6
    x = inputs(B=1, T=T).expand(T, T, -1)
    ivs = [Intervention("controller.state", 0.5, steps=[t], rows=[t]) for t in range(T)]
    batched, _ = run_with_sites(m, x, interventions=ivs)
    for t in range(T):
        single, _ = run_with_sites(m, x[:1], interventions=[Intervention("controller.state", 0.5, steps=[t])])
        assert (batched[t] - single[0]).abs().max() < 1e-5
