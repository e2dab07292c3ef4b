"""The structure of the code, read from its imports: no cycles, and arrows only point down.

cli -> server (wiring, host tuning, child processes) -> control -> dataplane -> embedding -> routing.
Every import counts: module level, inside functions, and under `if TYPE_CHECKING:` (a type-only
cycle is still two modules that cannot be understood apart).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("routing", "proxy", "bluegreen_dev")

# Rooms, lowest first: (module or package, room, rank). A module may import its own room or a lower
# one, never a higher one.
ROOMS = [
    ("routing", "routing", 0),
    ("proxy", "proxy", 0),  # the package itself (empty); every module in it belongs to a room below
    ("proxy.grpc_schema", "schema", 1),  # generated messages: import nothing of ours
    ("proxy.metrics", "metrics", 1),  # the one Prometheus registry every room writes into
    ("proxy.embedding", "embedding", 2),
    ("proxy.dataplane", "dataplane", 3),
    ("proxy.control", "control", 4),
    ("proxy.server", "server", 5),  # wiring
    ("proxy.host", "server", 5),  # host tuning
    ("proxy.process", "server", 5),  # child processes
    ("proxy.cli", "cli", 6),
    ("bluegreen_dev", "bluegreen_dev", 7),  # development tools may use anything; production imports none of it
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, wherever in the file the import stands."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):  # a package's own __init__ is not an edge
            resolved.add(target)
    return resolved


def room_of(name: str) -> tuple[str, int]:
    best = None
    for prefix, room, rank in ROOMS:
        if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, room, rank)
    assert best is not None, f"{name} belongs to no room: add it to ROOMS in {__file__}"
    return best[1], best[2]


def graph() -> dict[str, set[str]]:
    known = all_modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_every_module_belongs_to_a_room():
    for name in graph():
        room_of(name)


def test_no_import_points_up_a_room():
    upward = []
    for name, targets in graph().items():
        room, rank = room_of(name)
        for target in targets:
            target_room, target_rank = room_of(target)
            if target_rank > rank or (target_rank == rank and target_room != room):
                upward.append(f"{name} ({room}) -> {target} ({target_room})")
    assert upward == []


def test_no_import_cycle():
    edges = graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 6


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    arguments = function.args
    names = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    names += [a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None]
    return len([name for name in names if name not in ("self", "cls")])


def _comment_above(lines: list[str], function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The comment lines just above the function (and its decorators)."""
    first = min([function.lineno] + [decorator.lineno for decorator in function.decorator_list]) - 2
    comment = []
    while first >= 0 and lines[first].strip().startswith("#"):
        comment.insert(0, lines[first].strip())
        first -= 1
    return " ".join(comment)


def test_long_or_wide_functions_say_why():
    """Over 60 lines or more than 6 parameters is the exception: a comment just above says why."""
    unexplained = []
    for name, path in all_modules().items():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length, parameters = node.end_lineno - node.lineno + 1, _parameters(node)
            if length <= MAX_FUNCTION_LINES and parameters <= MAX_PARAMETERS:
                continue
            reason = _comment_above(lines, node)
            said = (length <= MAX_FUNCTION_LINES or "Long" in reason or "lines" in reason) and (
                parameters <= MAX_PARAMETERS or f"{parameters} parameters" in reason)
            if not said:
                unexplained.append(f"{name}.{node.name}: {length} lines, {parameters} parameters, comment above: {reason!r}")
    assert not unexplained, "\n".join(unexplained)
