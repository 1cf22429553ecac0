"""Layering rules of HOUSE_STYLE.md, checked in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_core_imports_neither_ray_nor_rasterio():
    loaded = _modules_after(
        "import maugif_core; maugif_core.build_model('vif'); maugif_core.metrics; maugif_core.baselines"
    )
    assert "maugif_core.metrics" in loaded and "maugif_core.baselines" in loaded
    for forbidden in ("ray", "rasterio", "fsspec", "s3fs"):
        assert forbidden not in loaded, f"maugif_core imported {forbidden}"


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in ("maugif_core", "pipeline"):
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the project that ``name`` imports anywhere in its body (function-level imports included)."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(base)
    return {m for m in found if m in modules and m != name}


def test_no_module_imports_another_that_imports_it_back():
    """No import circles among the project's modules, at any length (strongly connected components of one)."""
    root = Path(__file__).resolve().parents[1]
    modules = _modules(root)
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    assert not circles, f"import circles: {circles}"


def test_no_source_file_is_over_500_lines():
    root = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True, check=True)
    long = {p: n for p in tracked.stdout.split() if (n := len((root / p).read_text().splitlines())) > 500}
    assert not long, f"split these modules (over 500 lines): {long}"
