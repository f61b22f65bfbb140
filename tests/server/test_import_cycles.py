"""No import cycles inside the server package: every import statement anywhere in a
module (also inside functions, where a cycle hides until that code runs) is an arrow,
and the arrows form no loop, neither between modules nor between the server's parts
(a subpackage such as services/ counts as one part: services/jobs -> jobs.py ->
services/analysis is a loop even though no module comes back to itself)."""
from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
PACKAGE = "mnemoscope.server"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in SERVER.rglob("*.py"):
        parts = list(path.relative_to(SERVER).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([PACKAGE, *parts])] = path
    return names


def import_graph() -> dict[str, set[str]]:
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                # `from package import module` imports the module; `from module import name` the module
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with each subpackage of the server collapsed into one node."""
    def part(module: str) -> str:
        return ".".join(module.split(".")[:3])

    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        parts.setdefault(part(module), set()).update(part(t) for t in targets)
    return {p: targets - {p} for p, targets in parts.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_server_has_no_import_cycles():
    graph = import_graph()
    assert f"{PACKAGE}.routers.jobs" in graph[f"{PACKAGE}.app"]  # the graph sees relative imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_servers_parts_have_no_import_cycles():
    parts = part_graph(import_graph())
    assert f"{PACKAGE}.services" in parts[f"{PACKAGE}.routers"]
    assert find_cycle(parts) is None, " -> ".join(find_cycle(parts))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    loop = {"x.y.s.jobs": {"x.y.jobs"}, "x.y.jobs": {"x.y.s.analysis"}, "x.y.s.analysis": set()}
    assert find_cycle(loop) is None and find_cycle(part_graph(loop)) == ["x.y.jobs", "x.y.s", "x.y.jobs"]


def test_the_job_manager_imports_no_service():
    assert not {m for m in import_graph()[f"{PACKAGE}.jobs"] if m.startswith(f"{PACKAGE}.services")}
