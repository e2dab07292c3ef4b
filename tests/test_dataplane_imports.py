"""The data path's arrows point one way: no import cycle among its modules (imports under
TYPE_CHECKING included), and nothing of the control plane, the CLI or the server imported."""
from __future__ import annotations

import ast
from pathlib import Path

DATAPLANE = Path(__file__).resolve().parent.parent / "proxy" / "dataplane"
OUTSIDE = ("proxy.control", "proxy.cli", "proxy.server")


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at any depth of its syntax tree (TYPE_CHECKING blocks, functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = {f"proxy.dataplane.{path.stem}": path for path in DATAPLANE.glob("*.py") if path.stem != "__init__"}
    return {name: _imports(path) for name, path in modules.items()}


def test_no_cycle_among_the_data_path_modules():
    graph = _graph()
    edges = {name: {other for other in imports if other in graph} for name, imports in graph.items()}
    visiting, done = [], set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, "import cycle: " + " -> ".join(visiting[visiting.index(name):] + [name])
        visiting.append(name)
        for other in sorted(edges[name]):
            visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(edges):
        visit(name)


def test_the_data_path_imports_nothing_above_it():
    for name, imports in _graph().items():
        assert not [module for module in imports if module.startswith(OUTSIDE)], name


def test_the_request_carrier_is_at_the_bottom():
    imports = _graph()["proxy.dataplane.request"]
    assert {module for module in imports if module.startswith("proxy.")} <= {
        "proxy.dataplane.live", "proxy.dataplane.live.Snapshot",
        "proxy.dataplane.upstream", "proxy.dataplane.upstream.UpstreamResponse",
    }
