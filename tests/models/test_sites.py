"""The site contract on the LSTM control (the other architectures have their own tests)."""
import pytest
import torch

from mnemoscope.models import Intervention, build_model, hooks, run_with_sites


def lstm():
    torch.manual_seed(0)
    return build_model("lstm", dict(input_size=3, output_size=2, hidden_size=8))


def test_record_star_and_shapes():
    m = lstm()
    x = torch.randn(4, 6, 3)
    y, trace = run_with_sites(m, x, record="*")
    assert set(trace.names()) == {"controller.output", "controller.cell", "controller.state", "output"}
    assert trace["controller.state"].shape == (4, 6, 1, 2, 8)
    assert trace["controller.output"].shape == (4, 6, 8)
    assert torch.equal(trace["output"], y.detach())


def test_hooks_detach_after_exception():
    m = lstm()
    with pytest.raises(RuntimeError):
        with hooks(m, record="*"):
            raise RuntimeError("boom")
    assert m._bus is None


def test_unknown_site_is_clear_error():
    m = lstm()
    with pytest.raises(ValueError, match="controller.output"):
        run_with_sites(m, torch.randn(1, 2, 3), record=["memory.read"])


def test_batched_rows_equal_separate_runs():
    m = lstm()
    x = torch.randn(1, 7, 3).expand(5, 7, 3)
    ivs = [Intervention("controller.cell", 0.0, steps=[t], rows=[t]) for t in range(5)]
    batched, _ = run_with_sites(m, x, interventions=ivs)
    for t in range(5):
        single, _ = run_with_sites(m, x[:1], interventions=[Intervention("controller.cell", 0.0, steps=[t])])
        assert (batched[t] - single[0]).abs().max() < 1e-5


@pytest.mark.parametrize("t", [0, 2, 5])
def test_controller_state_changes_outputs_from_t_on(t):
    m = build_model("lstm", dict(input_size=3, output_size=2, hidden_size=8, num_layers=2))
    x = torch.randn(2, 7, 3)
    clean, tr = run_with_sites(m, x, record=["controller.state", "controller.output"])
    assert tr["controller.state"].shape == (2, 7, 2, 2, 8)
    assert torch.equal(tr["controller.state"][:, 1:, 1, 0], tr["controller.output"][:, :-1])  # top layer's h
    y, _ = run_with_sites(m, x, interventions=[Intervention("controller.state", 1.0, steps=[t])])
    assert torch.equal(y[:, :t], clean[:, :t]) and not torch.equal(y[:, t], clean[:, t])


def test_controller_state_batched_rows_equal_separate_runs():
    m = lstm()
    x = torch.randn(1, 7, 3).expand(5, 7, 3)
    ivs = [Intervention("controller.state", 0.0, steps=[t], rows=[t]) for t in range(5)]
    batched, _ = run_with_sites(m, x, interventions=ivs)
    for t in range(5):
        single, _ = run_with_sites(m, x[:1], interventions=[Intervention("controller.state", 0.0, steps=[t])])
        assert (batched[t] - single[0]).abs().max() < 1e-5


def test_roles_are_checked():
    from mnemoscope.models.sites import SiteSpec

    with pytest.raises(ValueError, match="unknown role"):
        SiteSpec("x", "read", (1,), ("feature",), role="mem")
    assert SiteSpec("x", "read", (1,), ("feature",), role="memory").to_dict()["role"] == "memory"
