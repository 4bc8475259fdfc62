"""The architecture as a test (docs/architecture.md): imports only point down the layers, and no module
imports itself through others (no import circle). Read with `ast` from the source, so an import inside a
function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; a module may import its own layer or any below it.
LAYERS = [
    ("safemaml.errors", "safemaml.checks", "safemaml.config", "safemaml.files", "safemaml.allocator"),
    ("safemaml.envs",),
    ("safemaml.tasks",),
    ("safemaml.measure",),
    ("safemaml.engine",),
    ("objectives",),
    ("safemaml.runs",),
    ("safemaml.studies",),
    ("safemaml.api",),
    ("safemaml.cli", "safemaml.__main__", "safemaml"),  # the package facade imports the API lazily
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("safemaml").rglob("*.py"), *ROOT.joinpath("objectives").rglob("*.py")]
    return {module_name(p): p for p in files}


def layer_of(module: str) -> int:
    """The layer of `module`: the longest matching prefix in LAYERS."""
    best, length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `module` imports (a `from pkg import name` counts pkg.name when that
    is a module, else pkg)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != module}


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def test_imports_only_point_down_the_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in graph().items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules: Python's package import, not a circle
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a planted upward import (engine importing runs) is reported."""
    modules = {"safemaml.engine.x": tmp_path / "x.py", "safemaml.runs.train": tmp_path / "t.py"}
    modules["safemaml.engine.x"].write_text("def f():\n    from safemaml.runs import train\n")
    assert imports_of("safemaml.engine.x", modules["safemaml.engine.x"], modules) == {"safemaml.runs.train"}
    assert layer_of("safemaml.runs.train") > layer_of("safemaml.engine.x")
