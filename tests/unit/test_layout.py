"""The package stays easy to live in: small modules, short functions, layers that import
only downwards (no import cycle), and one module per outside dependency that needs one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "flask_sse_stream"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def module_level_imports(name: str, tree: ast.Module) -> set[str]:
    """The package's modules that ``name`` imports when it is imported (imports inside
    functions and under ``if TYPE_CHECKING:`` run later, or never)."""
    found: set[str] = set()
    base = name if is_package(name) else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("flask_sse_stream")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                target = f"{anchor}.{node.module}" if node.module else anchor
            elif node.module and node.module.startswith("flask_sse_stream"):
                target = node.module
            else:
                continue
            found.add(target)
            # "from . import runtime" names a submodule
            found |= {f"{target}.{a.name}" for a in node.names}
    return found


def test_no_module_is_longer_than_the_limit() -> None:
    long = {name: tree.body[-1].end_lineno for name, tree in modules().items()
            if tree.body and (tree.body[-1].end_lineno or 0) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_longer_than_the_limit() -> None:
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({length})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_package_has_no_import_cycle() -> None:
    trees = modules()
    graph = {name: {m for m in module_level_imports(name, tree) if m in trees and m != name}
             for name, tree in trees.items()}
    # a package's __init__ importing its own submodules is how packages are made
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles}"


def test_only_one_module_imports_each_outside_runtime() -> None:
    """gevent only in the runtime's gevent module; redis only in the redis package."""
    importers: dict[str, set[str]] = {"gevent": set(), "redis": set()}
    for name, tree in modules().items():
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for top in importers:
                if any(n == top or n.startswith(top + ".") for n in names):
                    importers[top].add(name)
    assert importers["gevent"] == {"flask_sse_stream.runtime.gevent"}
    assert importers["redis"] and all(
        name.startswith("flask_sse_stream.redis") for name in importers["redis"]
    ), importers["redis"]
