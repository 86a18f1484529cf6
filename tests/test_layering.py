"""Imports only point down the layers (docs/architecture.md), checked on the source itself.

Each package may import the packages listed for it and nothing above; the QGIS plugin may
import only the pure-Python parts it shares with the engine. A cycle or an upward import
would make "the engine is a pure pipeline" untrue without any test noticing.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qgis_unravel"

# what each first-level part may import from the project (besides itself and `paths`)
ALLOWED = {
    "ops": set(),
    "worker": set(),
    "synthetic": set(),
    "zoo": {"detector", "ops"},
    "detector": {"ops"},
    "engine": {"detector", "ops", "worker"},
    "training": {"detector", "ops", "engine", "zoo", "synthetic"},
    "app": {"detector", "ops", "engine", "worker", "zoo", "training", "synthetic"},
    # engine.style: the QML builder; engine.spec/errors: the RunSpec the plugin fills (pure Python)
    "plugin": {"worker", "zoo", "engine.style", "engine.spec", "engine.errors"},
}


def _project_imports(path: Path) -> set[tuple[str, ...]]:
    """(part, module) pairs of qgis_unravel that a module imports (relative or absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level])
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts] if node.module else [base + [alias.name] for alias in node.names]
            else:
                names = [(node.module or "").split(".")]
            for parts in names:
                if parts[:1] == ["qgis_unravel"] and len(parts) > 1:
                    found.add(tuple(parts[1:3]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "qgis_unravel" and len(parts) > 1:
                    found.add(tuple(parts[1:3]))
    return found


def test_imports_point_down_only() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) == 1:
            continue  # the package front door (classFactory, load_detector)
        layer = parts[0]
        allowed = ALLOWED[layer] | {layer, "paths"}
        for target in sorted(_project_imports(path)):
            if target[0] not in allowed and ".".join(target) not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {'.'.join(target)}")
    assert not wrong, "\n".join(wrong)


def test_every_part_has_a_rule() -> None:
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert parts == set(ALLOWED)


def _module_imports(path: Path) -> set[str]:
    """Dotted qgis_unravel modules a file imports (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel.parts[: len(rel.parts) - node.level])
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = (node.module or "").split(".")
            if parts[:1] == ["qgis_unravel"]:
                targets = [parts + [alias.name] for alias in node.names]
                for target in targets:  # "from pkg import module" names a module when it is one
                    dotted = ".".join(target)
                    found.add(dotted if _is_module(dotted) else ".".join(parts))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qgis_unravel."):
                    found.add(alias.name)
    return {name for name in found if name != ".".join(rel.parts)}


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_no_import_cycles_between_modules() -> None:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = {m for m in _module_imports(path) if _is_module(m)}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package's front door importing its own submodules is not a cycle
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)
