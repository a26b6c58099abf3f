"""Shared output helpers: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import click
from pydantic import BaseModel
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)
# What is said about how a command ran (not what it answers) goes to stderr: `--json` stays
# parseable, and a pipe gets the answer alone.
notice = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
    "lost": "magenta",
}


def print_json(data: BaseModel | dict[str, Any] | list[Any]) -> None:
    if isinstance(data, BaseModel):
        text = data.model_dump_json(indent=2)
    else:
        text = json.dumps(data, indent=2, default=str)
    # Plain print: rich would wrap and colour what a script parses.
    click.echo(text)


def status(value: str) -> str:
    return f"[{STATUS_STYLE.get(value, 'white')}]{value}[/]"


def number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # As the sidebar shows them: a loss that became NaN is worth seeing.
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.4g}"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(value: datetime) -> str:
    seconds = (datetime.now(timezone.utc) - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def fitted_table(
    columns: list[tuple[str, dict[str, Any]]],
    rows: list[list[str]],
    *,
    optional: list[str],
    width: int | None = None,
) -> Table:
    """A table of ``rows`` that fits ``width`` (the terminal's) with no value cut short.

    Rich shrinks a table that is too wide by cutting cells to "0.…", which hides the very
    numbers a table of runs is for. Instead, the ``optional`` columns are left out, in that
    order, until the rest fits: cells that do not wrap (``no_wrap``) at their full width, and
    the others at their longest word or their ``min_width``.
    """
    width = console.width if width is None else width
    names = [name for name, _ in columns]

    def needed(name: str, options: dict[str, Any]) -> int:
        i = names.index(name)
        texts = [Text.from_markup(name), *(Text.from_markup(row[i]) for row in rows)]
        if options.get("no_wrap"):
            return max(t.cell_len for t in texts)
        words = [cell_len(w) for t in texts for w in t.plain.split()]
        return max([options.get("min_width") or 0, *words])

    shown = list(names)
    for name in [None, *optional]:
        if name in shown:
            shown.remove(name)
        # A column with box=None is padded by one space on each side.
        total = sum(needed(n, o) + 2 for n, o in columns if n in shown)
        if total <= width:
            break
    table = Table(box=None, header_style="bold")
    for name, options in columns:
        if name in shown:
            table.add_column(name, **options)
    for row in rows:
        table.add_row(*(cell for name, cell in zip(names, row, strict=True) if name in shown))
    return table
