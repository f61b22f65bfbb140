"""Choosing sites by kind, element masks, and the no-architecture-branches rule."""
import re
from pathlib import Path

import pytest

from mnemoscope.analysis.sites import (bypass_sites, check_compatible, check_sites, distribution_sites,
                                       element_mask, memory_sites, read_sites, slot_weight_sites)
from mnemoscope.models.sites import SiteSpec
from mnemoscope.models.tasks import make_task

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"


def test_kinds_pick_sites(make_model, task):
    m = make_model("ntm", task)
    assert read_sites(m) == ["memory.read"]
    assert bypass_sites(m) == ["controller.output"]
    assert "memory.matrix" not in memory_sites(m)  # on request: only when named
    assert set(slot_weight_sites(m)) == {"memory.read_weights", "memory.write_weights"}
    assert set(distribution_sites(m)) >= {"memory.read_weights", "memory.write_weights"}


def test_check_sites_globs_and_errors(make_model, task):
    m = make_model("ntm", task)
    assert check_sites(m, ["memory.read*"]) == ["memory.read", "memory.read_weights"]
    assert check_sites(m, ["memory.matrix"]) == ["memory.matrix"]
    with pytest.raises(ValueError, match="controller.output"):
        check_sites(m, ["nope"])


def test_element_mask():
    spec = SiteSpec("w", "read_weights", (2, 5), ("head", "slot"), distribution=True)
    m = element_mask(spec, {"slot": [1, 3]})
    assert m.shape == (1, 5) and m[0].tolist() == [False, True, False, True, False]
    m = element_mask(spec, {"head": [1], "slot": [0]})
    assert m.shape == (2, 5) and m.sum() == 1 and m[1, 0]
    assert element_mask(spec, None) is None
    with pytest.raises(ValueError, match="axes are"):
        element_mask(spec, {"key": [0]})
    with pytest.raises(ValueError, match="out of range"):
        element_mask(spec, {"slot": [5]})
    grows = SiteSpec("a", "attention", (2, None), ("head", "key"))
    assert element_mask(grows, {"head": [0]}).shape == (2, 1)
    with pytest.raises(ValueError, match="grows"):
        element_mask(grows, {"key": [0]})


def test_incompatible_task_is_clear(make_model, task):
    m = make_model("ntm", task)
    with pytest.raises(ValueError, match="input_size"):
        check_compatible(m, make_task("copy", bits=5))


def test_no_architecture_branches():
    """analysis/ is driven by site kinds only: no architecture names, no arch checks."""
    from mnemoscope.models.registry import ARCHITECTURES, _load_all

    _load_all()
    names = set(ARCHITECTURES)
    for path in ANALYSIS.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\.arch\s*(==|!=|in\b)", text), f"{path.name} branches on model.arch"
        assert "isinstance(model" not in text, f"{path.name} branches on the model class"
        for name in names:
            assert not re.search(rf"[\"']{re.escape(name)}[\"']", text), f"{path.name} names architecture {name!r}"
        assert not re.search(r"^\s*from \.\.(server|dashboard)|mnemoscope\.(server|dashboard)", text, re.M), \
            f"{path.name} imports the server or dashboard"


def test_every_arch_declares_its_components(arch, make_model, task):
    """Roles come from the model files; analysis reads them. Memory models declare memory,
    recurrent controllers their state, and no site is both."""
    from mnemoscope.analysis.sites import components

    m = make_model(arch, task)
    comp = components(m)
    named = [n for names in comp.values() for n in names]
    assert len(named) == len(set(named))
    specs = m.site_specs()
    for role, names in comp.items():
        assert all(specs[n].role == role for n in names)
    if any(s.kind == "read_weights" for s in specs.values()):  # slot memories: NTM-like controllers
        assert comp["memory"] == ["memory.read"] and comp["bypass"] == ["controller.output"]
        assert comp["state"] == ["controller.state"]
