"""The site contract on the LSTM control (the other architectures have their own tests)."""
import fnmatch
import time

import pytest
import torch

from mnemoscope.models import Intervention, build_model, hooks, run_with_sites
from mnemoscope.models.glob import MAX_PATTERN_LENGTH, compile_glob
from mnemoscope.models.sites import resolve_sites


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


# -- site patterns: our own glob matcher ------------------------------------------------------

GLOB_NAMES = ["", "a", "b", "-", "]", "[", "!", "^", "\\", "ab", "ba", "abc", "a.b", "a-b", "memory.read",
              "memory.read_weights", "layers.0.memory.read", "layers.12.ssm.state", "controller.output",
              "x]y", "a[b", "a*b", "a?b", "zz"]
GLOB_PATTERNS = ["*", "**", "?", "??", "a", "a*", "*b", "*.*", "a?b", "memory.*", "*.memory.*", "layers.?.*",
                 "layers.*.ssm.*", "*read*", "*r*e*a*d", "[ab]", "[!ab]", "[a-c]*", "[!a-c]", "[]]", "[!]]",
                 "[]a]", "[a-]", "[-a]", "[!-a]", "[z-a]", "[!z-a]", "[a-c-e]", "[c-a-z]", "[a-cx-b]", "[]-a]",
                 "x]y", "]", "[[]", "[\\]", "[^a]", "[a&&b]", "a[b]c", "*[0-9]*", "layers.[0-9].*", "\\",
                 "*[!.]", "?*?", "*?*?*", "a*b*", "*a*b", "[!]-]"]


@pytest.mark.parametrize("pattern", GLOB_PATTERNS)
def test_glob_agrees_with_fnmatchcase(pattern):
    glob = compile_glob(pattern)
    for name in GLOB_NAMES:
        assert glob.matches(name) == fnmatch.fnmatchcase(name, pattern), (pattern, name)


@pytest.mark.parametrize("pattern", ["[", "a[", "[!", "[]", "[!]", "memory.[read", "*[" * 3])
def test_glob_refuses_an_unclosed_bracket(pattern):
    with pytest.raises(ValueError, match="no closing"):
        compile_glob(pattern)


def test_hostile_site_pattern_is_refused_at_once():
    specs = lstm().site_specs()
    start = time.perf_counter()
    with pytest.raises(ValueError, match="at most 256"):
        resolve_sites(specs, ["*[" * 20000])
    with pytest.raises(ValueError, match="no closing"):
        resolve_sites(specs, ["*[" * (MAX_PATTERN_LENGTH // 2)])
    assert time.perf_counter() - start < 0.5


def test_worst_case_glob_is_fast():
    """Many stars against a long near-miss: backtracking only to the last star keeps this
    at pattern length times name length, not exponential."""
    pattern = "*a" * (MAX_PATTERN_LENGTH // 2 - 1) + "*b"
    name = "a" * 5000
    start = time.perf_counter()
    assert not compile_glob(pattern).matches(name)
    assert compile_glob(pattern).matches(name + "b")
    assert time.perf_counter() - start < 1.0


def test_resolve_sites_globs_and_exact_names():
    specs = lstm().site_specs()
    assert resolve_sites(specs, "controller.*") == {"controller.output", "controller.cell", "controller.state"}
    assert resolve_sites(specs, ["controller.[oc]*", "output"]) == {"controller.output", "controller.cell", "output"}
    with pytest.raises(ValueError, match="no site matches"):
        resolve_sites(specs, ["memory.?"])


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
