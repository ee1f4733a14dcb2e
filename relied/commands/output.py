"""Terminal output shared by every verb: consoles, the ``--json`` flag, one-line errors, tables."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def fail(message: str) -> None:
    """Print a one-line error (markup in ``message`` is shown as text) and exit with status 2."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def metric_table(title: str, rows: dict[str, object], head: str = "metric") -> Table:
    """A two-column table of named values; floats are shown with three decimals."""
    table = Table(title=title)
    table.add_column(head)
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    return table
