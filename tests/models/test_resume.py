"""The site contract's resume API: running steps 0..t, then resuming t..T from the state
entering t, equals the full forward pass, with and without interventions."""
import pytest
import torch

from mnemoscope.models.registry import build_model
from mnemoscope.models.sites import Intervention, hooks

INPUT, OUTPUT, T = 5, 4, 9
RESUMABLE = {
    "ntm": ("ntm", dict(controller_size=8, memory_slots=8, memory_width=4, read_heads=2)),
    "ntm-sparse-cut": ("ntm", dict(controller_size=8, memory_slots=8, memory_width=4, cut="sparse")),
    "dnc": ("dnc", dict(controller_size=8, memory_slots=6, memory_width=4, read_heads=2,
                        masking=True, deallocation=True, sharpness=True)),
    "lstm": ("lstm", dict(hidden_size=8, num_layers=2)),
    "delta+conv": ("sequence", dict(d_model=16, heads=2, blocks=["memory", "mlp", "memory"], rule="delta",
                                    conv_size=3, chunk_size=4)),
    "gated_delta": ("sequence", dict(d_model=16, heads=2, blocks=["memory", "mlp"], rule="gated_delta",
                                     chunk_size=4)),
    "gla-vector": ("sequence", dict(d_model=16, heads=2, blocks=["memory"], rule="gla", gate="vector", chunk_size=4)),
    "retnet-cut": ("sequence", dict(d_model=16, heads=2, blocks=["memory", "mlp"], rule="retnet", cut="bypass")),
    "linear-recurrent": ("sequence", dict(d_model=16, heads=2, blocks=["memory", "mlp"], rule="linear",
                                          mode="recurrent")),
}


def _model(case):
    arch, config = RESUMABLE[case]
    torch.manual_seed(0)
    return build_model(arch, dict(input_size=INPUT, output_size=OUTPUT, **config)).eval()


@pytest.mark.parametrize("case", sorted(RESUMABLE))
@pytest.mark.parametrize("t", [0, 4, T])
def test_resume_at_t_equals_the_full_forward(case, t):
    model = _model(case)
    assert model.supports_resume
    x = torch.randn(3, T, INPUT)
    with torch.no_grad():
        full = model(x)
        head, state, _ = model.run_steps(x, stop=t)
        tail, _, _ = model.run_steps(x, state, start=t)
    assert head.shape == (3, t, OUTPUT) and tail.shape == (3, T - t, OUTPUT)
    assert torch.allclose(torch.cat([head, tail], dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", sorted(RESUMABLE))
def test_kept_states_resume_with_an_intervention_at_their_step(case):
    """Resuming from the kept state entering t, with a patch at t, equals the patched forward
    pass: steps and site names keep their absolute meaning in a resumed run."""
    model = _model(case)
    x = torch.randn(2, T, INPUT)
    site = next(n for n in ("memory.read", "layers.0.memory.read", "controller.output") if n in model.site_specs())
    t = 6  # a step where the sparse cut lets memory reach the output
    iv = Intervention(site, 0.5, steps=[t])
    with torch.no_grad():
        _, _, states = model.run_steps(x, keep_states=True)
        assert len(states) == T
        with hooks(model, [site], [iv]) as full_trace:
            full = model(x)
        with hooks(model, [site], [iv]) as resumed_trace:
            tail, _, _ = model.run_steps(x, states[t], start=t)
    assert not torch.allclose(full, model(x).detach())  # the patch matters
    assert torch.allclose(tail, full[:, t:], atol=1e-5, rtol=0)
    assert torch.allclose(resumed_trace[site], full_trace[site][:, t:], atol=1e-5, rtol=0)


def test_models_without_the_api_say_so():
    torch.manual_seed(0)
    hybrid = build_model("sequence", dict(input_size=INPUT, output_size=OUTPUT, d_model=16, heads=2,
                                          blocks=["memory", "attention"], window=3))
    assert not hybrid.supports_resume
    with pytest.raises(NotImplementedError):
        hybrid.run_steps(torch.randn(1, T, INPUT))


def test_run_steps_errors():
    model = _model("ntm")
    x = torch.randn(1, T, INPUT)
    with pytest.raises(ValueError, match="needs the state"):
        model.run_steps(x, start=2)
    with pytest.raises(ValueError, match="outside"):
        model.run_steps(x, stop=T + 1)


def test_a_resumed_stack_has_no_implicit_attention():
    model = _model("gated_delta")
    with hooks(model, ["layers.0.memory.attention"]), pytest.raises(ValueError, match="every earlier step"):
        model.run_steps(torch.randn(1, T, INPUT))
