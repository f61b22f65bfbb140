"""The rooms import one way: models -> analysis -> server -> dashboard, with cli/ beside the
server. Read from the source with `ast` (nothing is imported), so a forbidden import fails
here even when it sits in a function body or under `if TYPE_CHECKING:`.

Each room is a top-level folder installed as `mnemoscope.<room>` (pyproject.toml's
package-dir, read below); an import is attributed to the room it names, relative imports
resolved against the importing file's package.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "mnemoscope"

# room -> the other mnemoscope rooms it may import (its own always; the top-level `mnemoscope`
# package, which holds only the version and the zoo's files, is open to all)
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "analysis": {"models"},
    "server": {"models", "analysis"},
    "cli": {"models", "analysis", "server"},
    # the dashboard is an HTTP client of the server: no mnemoscope room, and no torch
    "dashboard": set(),
}
# (file, module) pairs allowed beyond ALLOWED: the server mounts the dashboard in one place
EXCEPTIONS = {("server/app.py", "mnemoscope.dashboard.app")}
# third-party packages a room must not import
FORBIDDEN_PACKAGES = {"dashboard": {"torch"}}


def rooms() -> dict[str, Path]:
    """room name -> its folder, from pyproject.toml's package-dir."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name.split(".", 1)[1]: REPO / folder for name, folder in package_dir.items() if name.startswith(PACKAGE + ".")}


def imported_modules(path: Path, package: list[str]) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the file. `from X import a` gives
    `X.a` (a may be a module: `from mnemoscope import cli`); `package` is the dotted
    package the file belongs to, for relative imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def violations(room: str, folder: Path, known_rooms: set[str]) -> list[str]:
    problems = []
    allowed = ALLOWED[room] | {room}
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder)
        package = [PACKAGE, room, *rel.parent.parts]
        shown = f"{folder.name}/{rel.as_posix()}"
        for line, module in imported_modules(path, package):
            target = room_of(module)
            if target in known_rooms and target not in allowed and not any(
                    shown == file and (module == allowed_module or module.startswith(allowed_module + "."))
                    for file, allowed_module in EXCEPTIONS):
                problems.append(f"{shown}:{line} imports {module} ({room} may not import {target})")
            if module.split(".")[0] in FORBIDDEN_PACKAGES.get(room, ()):
                problems.append(f"{shown}:{line} imports {module} ({room} may not import {module.split('.')[0]})")
    return problems


def test_every_room_has_a_rule():
    assert set(rooms()) == set(ALLOWED), "a room was added or removed: give it a line in ALLOWED"


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_follow_the_arrows(room):
    found = rooms()
    assert found[room].is_dir()
    assert violations(room, found[room], set(found)) == []


def test_the_exceptions_still_exist():
    """An exception nobody needs any more is a hole in the rule: drop it."""
    for file, module in EXCEPTIONS:
        room = file.split("/", 1)[0]
        folder = rooms()[room]
        path = REPO / file
        package = [PACKAGE, room, *path.relative_to(folder).parent.parts]
        assert any(m == module or m.startswith(module + ".") for _, m in imported_modules(path, package)), (file, module)


def test_the_check_sees_absolute_relative_and_nested_imports(tmp_path):
    """The checker itself: each way of importing another room is caught."""
    models = tmp_path / "models"
    (models / "tasks").mkdir(parents=True)
    (models / "ok.py").write_text("from .sites import SiteModel\nimport torch\nfrom mnemoscope import models\n")
    (models / "bad.py").write_text("import mnemoscope.analysis.report\nfrom mnemoscope import server\n")
    (models / "tasks" / "bad.py").write_text("def f():\n    from ...cli import main\n    from ..analysis import x\n")
    known = {"models", "analysis", "server", "dashboard", "cli"}
    found = violations("models", models, known)
    # `..analysis` from models/tasks/ is mnemoscope.models.analysis: models' own room
    assert [p.split(" (")[0] for p in found] == [
        "models/bad.py:1 imports mnemoscope.analysis.report",
        "models/bad.py:2 imports mnemoscope.server",
        "models/tasks/bad.py:2 imports mnemoscope.cli.main",
    ]
    dashboard = tmp_path / "dashboard"
    dashboard.mkdir()
    (dashboard / "page.py").write_text("import torch.nn\nfrom ..models import sites\n")
    assert len(violations("dashboard", dashboard, known)) == 2
