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
    assert set(trace.names()) == {"controller.output", "controller.cell", "output"}
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


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=[12]), r"steps \[12\] out of range; this run has 7 timesteps"),
    (dict(steps=[-1]), r"steps \[-1\] out of range"),
    (dict(rows=[4]), r"rows \[4\] out of range; this run has 2 batch rows"),
])
def test_intervention_outside_the_run_is_an_error_not_a_no_op(kwargs, message):
    m = lstm()
    with pytest.raises(ValueError, match=message):
        run_with_sites(m, torch.randn(2, 7, 3), interventions=[Intervention("controller.output", 0.0, **kwargs)])
    assert m._bus is None
    # in range, the same intervention runs
    run_with_sites(m, torch.randn(2, 13, 3), interventions=[Intervention("controller.output", 0.0, steps=[12])])
