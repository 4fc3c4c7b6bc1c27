"""The package's imports flow one way (docs/architecture.md): errors -> checkpoint_format -> convert -> hub ->
model -> training, with no cycle among modules — imports inside functions included, since a cycle hidden in
a function is still a cycle (it only fails later, and only on some call orders)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sat_accel"

# Lowest layer first; a module may import its own layer and lower ones. arguments/sat_flags/data/metrics are
# support libraries beside hub (they import errors and each other only). Modules not listed (the package root, SAT-path compat
# re-exports) are facades: they may import anything, and no listed module may import them.
LAYERS = [
    ("sat_accel.errors",),
    ("sat_accel.checkpoint_format",),
    ("sat_accel.convert",),
    ("sat_accel.hub", "sat_accel.download", "sat_accel.archive", "sat_accel.arguments", "sat_accel.sat_flags",
     "sat_accel.flag_checks",
     "sat_accel.data", "sat_accel.metrics"),
    ("sat_accel.model",),
    ("sat_accel.training",),
]
FACADE = len(LAYERS)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of the package that `name` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _layer(name: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    return FACADE


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
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

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    known = {"sat_accel.a": tmp_path / "a.py", "sat_accel.b": tmp_path / "b.py", "sat_accel.c.d": tmp_path}
    source = tmp_path / "a.py"
    source.write_text("def f():\n    from .b import x\n    from .c import d\n")
    assert _imports("sat_accel.a", source, known) == {"sat_accel.b", "sat_accel.c.d"}
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_the_package_modules():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("leaf", ["sat_accel.errors", "sat_accel.checkpoint_format"])
def test_leaf_modules_import_nothing_above_them(leaf):
    assert _graph()[leaf] <= {"sat_accel.errors"}


def test_imports_flow_from_errors_up_to_training():
    upward = [f"{src} (layer {_layer(src)}) imports {dst} (layer {_layer(dst)})"
              for src, targets in sorted(_graph().items()) for dst in sorted(targets) if _layer(dst) > _layer(src)]
    assert not upward, "imports against the layer order: " + "; ".join(upward)
