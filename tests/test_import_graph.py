"""The shape of the tree: the import graph has no cycle, and the core never imports the layers built on it.

Every `import` statement counts, wherever it stands (module level, inside a function, under `TYPE_CHECKING`):
a cycle through a type-only import is still two modules that cannot be understood one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's modules live (pyproject maps addons/ and web/ into the tokenlens namespace).
PACKAGES = {
    "tokenlens": ROOT / "tokenlens",
    "tokenlens.addons": ROOT / "addons",
    "tokenlens.web": ROOT / "web",
}
LAYERS = ("tokenlens.addons", "tokenlens.web", "tokenlens.cli")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (`from package import module` counts as the module)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_the_import_graph_has_no_cycle() -> None:
    # A package's __init__ importing its own modules (to re-export them) is not a cycle of design: a module
    # importing `tokenlens.config` depends on the package's modules, not the other way round.
    edges = {
        name: {target for target in targets if not target.startswith(name + ".")}
        for name, targets in graph().items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def in_layer(name: str) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in LAYERS)


def test_the_core_imports_no_layer_built_on_it() -> None:
    offending = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        if not in_layer(name) and name != "tokenlens.__main__"  # the entry point runs the command line
        for target in targets
        if in_layer(target)
    ]
    assert not offending, "\n".join(offending)
