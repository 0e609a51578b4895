"""The package's import graph has no cycle, and the domain imports only the standard library.

Every import statement counts, also those under ``if TYPE_CHECKING:`` and inside functions: a
cycle hidden that way still means a type lives in the wrong module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import scrapesink

ROOT = Path(scrapesink.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # ``from package import module`` imports that module
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target in _imports(path, name):
            if target in modules and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _is_package_parent(importer: str, target: str) -> bool:
    # ``import scrapesink.a.b`` runs ``scrapesink/__init__.py`` and ``a/__init__.py`` first;
    # a package's __init__ re-exporting its own modules is not a cycle of the code.
    return importer.startswith(target + ".")


def test_the_package_has_no_import_cycle() -> None:
    edges = {
        name: {t for t in targets if not _is_package_parent(name, t)}
        for name, targets in graph().items()
    }
    assert cycles(edges) == []


def test_the_checker_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def _allowed_in_domain(target: str) -> bool:
    top = target.split(".")[0]
    if top == "scrapesink":
        return target.startswith(("scrapesink.domain", "scrapesink.errors"))
    return top in sys.stdlib_module_names or top == "__future__"


def test_the_domain_imports_only_the_standard_library() -> None:
    outside = {
        _module_name(path): target
        for path in (ROOT / "domain").rglob("*.py")
        for target in _imports(path, _module_name(path))
        if not _allowed_in_domain(target)
    }
    assert outside == {}
