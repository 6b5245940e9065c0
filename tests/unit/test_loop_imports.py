"""The task loop's modules, read from their source: the step attempts act through the
`StepRun` port and reach nothing of the task loop, and no module of the loop's lifecycle,
recovery or attempts imports, through any chain, one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

LOOP = Path(__file__).resolve().parents[2] / "engine" / "loop"
PACKAGE = "engine.loop"
ATTEMPTS = ("step_run", "step_attempt", "ai_attempt")


def loop_imports() -> dict[str, set[str]]:
    """For each engine/loop module, the engine/loop modules it imports: at the top, in a
    function or for type checking alike."""
    modules = {path.stem for path in LOOP.glob("*.py") if path.stem != "__init__"}
    edges: dict[str, set[str]] = {}
    for module in modules:
        found: set[str] = set()
        for node in ast.walk(ast.parse((LOOP / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        edges[module] = {name.split(".")[2] for name in found if name.startswith(f"{PACKAGE}.")}
        edges[module] &= modules
    return edges


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(edges[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges[module])
    return seen


def test_the_step_attempts_do_not_import_the_task_loop() -> None:
    edges = loop_imports()
    for attempt in ATTEMPTS:
        assert "task_loop" not in reachable(attempt, edges), attempt


def test_the_lifecycle_recovery_and_attempts_import_nothing_that_imports_them_back() -> None:
    edges = loop_imports()
    split = ("task_loop", "recovery", *ATTEMPTS)
    cyclic = sorted(module for module in split if module in reachable(module, edges))
    assert not cyclic, f"in an import cycle: {cyclic}"
