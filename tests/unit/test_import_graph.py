"""The code's own imports, read from its source: they point one way (`api -> engine ->
projections -> domain`) and no module imports, through any chain, one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "projections", "engine", "api")
LAYER = {name: rank for rank, name in enumerate(PACKAGES)}


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_of(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours this file imports, at the top, in a function or for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = sources()
    return {module: imports_of(path, known) - {module} for module, path in known.items()}


def cycle_through(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports from `start` back to itself, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        module, chain = stack.pop()
        for imported in edges[module]:
            if imported == start:
                return [*chain, start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*chain, imported]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = graph()
    cycles = {" -> ".join(c) for m in edges if (c := cycle_through(m, edges)) is not None}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_imports_point_from_the_ways_in_down_to_the_domain() -> None:
    upward = [
        f"{module} imports {imported}"
        for module, imported_modules in graph().items()
        for imported in imported_modules
        if LAYER[imported.split(".")[0]] > LAYER[module.split(".")[0]]
    ]
    assert not upward, "\n".join(sorted(upward))


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(edges[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges[module])
    return seen


def test_the_step_attempts_act_through_the_step_run_port_not_the_task_loop() -> None:
    edges = graph()
    attempts = ("engine.loop.step_run", "engine.loop.step_attempt", "engine.loop.ai_attempt")
    reaching = [a for a in attempts if "engine.loop.task_loop" in reachable(a, edges)]
    assert not reaching, f"these reach the task loop: {reaching}"
