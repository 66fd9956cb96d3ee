"""The package's layers import one way, and no modules import each other in a cycle.

Layers, bottom to top (docs/design.md "Layers"): the shared modules (the package's
version, errors, settings, progress), `events` (schema, log), `views` (tables, views, queries),
`ingest` (the fold that applies the views, the inbox, replay), `api`, and the
command-line shells. A module may import from its own layer and those below.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "runlake"
LAYERS = {"errors": 0, "settings": 0, "progress": 0, "events": 1, "views": 2, "ingest": 3,
          "api": 4, "web": 4, "cli": 5, "demo": 5, "__main__": 5, "__init__": 0}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every runlake module `path` imports, anywhere in it (TYPE_CHECKING included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("runlake"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("runlake"):
            found.add(node.module)
            # `from runlake.api import params` names a module too
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_has_a_layer() -> None:
    named = {m.split(".")[1] if "." in m else "__init__" for m in graph()}
    assert named <= set(LAYERS), named - set(LAYERS)


def test_nothing_below_imports_from_above() -> None:
    upward = sorted((m, i) for m, deps in graph().items() for i in deps
                    if layer(i) > layer(m) and layer(m) != 5)
    assert upward == []


def test_no_import_cycles() -> None:
    g = graph()
    # A package imports its own modules through __init__; that is not a cycle of code.
    g = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in g.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_type_checking_imports_hide_a_cycle() -> None:
    hidden = [p.name for p in PACKAGE.rglob("*.py") if "TYPE_CHECKING" in p.read_text()]
    assert hidden == []
