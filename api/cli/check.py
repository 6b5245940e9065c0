"""How `stepline run --check` prints its report: one row a step, then the workflow's own."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from api.cli.support import console
from engine.workflows.check import WorkflowCheck


def print_check(report: WorkflowCheck) -> None:
    table = Table(title=f"Check of {escape(report.name)} (tenant {escape(report.tenant)})")
    for column in ("", "#", "step", "runs as", "problems"):
        table.add_column(column, overflow="fold")
    for step in report.steps:
        table.add_row(
            "[red]✗[/]" if step.problems else "[green]✓[/]",
            str(step.index),
            escape(step.text),
            escape(step.runs_as),
            escape("\n".join(step.problems)),
        )
    console.print(table)
    base = report.base_url
    mark = "[green]✓[/]" if base.answered else "[red]✗[/]"
    console.print(f"{mark} base URL {escape(base.url or '-')}: {escape(base.said)}")
    for problem in report.problems:
        console.print(f"[red]✗[/] {escape(problem)}")
    found = report.problem_count
    if found:
        console.print(f"[red]{found} problem{'s' if found > 1 else ''}[/]: not ready to run")
    else:
        console.print("[green]ready to run[/]")
