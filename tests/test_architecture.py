"""The package's shape, checked from its imports (those inside functions included; those only for type
checkers left out): nothing outside `cli` imports `forgellm.cli`, and neither packages nor modules import
each other in a circle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import forgellm

ROOT = Path(forgellm.__file__).parent
# Sub-packages that count as packages of their own (DESIGN.md: data/ = read/ + study/ + prepare/).
SPLIT_PACKAGES = ("forgellm.data",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the forgellm modules it imports (a `from pkg import name` of a submodule counts as it)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t.startswith("forgellm.") and t != name)
    return graph


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement except those under `if TYPE_CHECKING:` (annotations, not dependencies)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                pending.extend(child.orelse)
            else:
                pending.append(child)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    for split in SPLIT_PACKAGES:
        depth = split.count(".") + 1
        if module.startswith(split + ".") and len(parts) > depth + 1:
            return ".".join(parts[: depth + 1])
    return ".".join(parts[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_nothing_outside_cli_imports_cli():
    offenders = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        if not module.startswith("forgellm.cli")
        for target in targets
        if target == "forgellm.cli" or target.startswith("forgellm.cli.")
    ]
    assert offenders == []


def test_no_cycle_between_packages():
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in _imports().items():
        packages[_package(module)].update(_package(t) for t in targets if _package(t) != _package(module))
    assert _cycles(packages) == []


def test_no_cycle_between_modules():
    assert _cycles(_imports()) == []


def test_the_checks_see_a_cycle():
    """The cycle finder itself: a circle of three is one component; a chain is none."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []
