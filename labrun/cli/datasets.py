"""``labrun datasets``: the content-hashed datasets, their versions and the runs that used them."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from labrun.datahash import human_size

from .local import reader
from .output import console, print_json, when


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List datasets (recorded by %mldataset) with their latest version."""
    if ctx.invoked_subcommand is not None:
        return
    with reader() as client:
        listing = client.datasets()
    if as_json:
        print_json(listing)
        return
    table = Table(box=None, header_style="bold")
    for column in ("dataset", "versions", "latest", "files", "size", "hash", "since"):
        table.add_column(column)
    for dataset in listing.datasets:
        latest = dataset.versions[-1] if dataset.versions else None
        table.add_row(
            Text(dataset.name),
            str(len(dataset.versions)),
            latest.version if latest else "",
            str(latest.file_count) if latest else "",
            human_size(latest.size) if latest else "",
            latest.content_hash[:12] if latest else "",
            when(latest.created_at) if latest else "",
        )
    console.print(table if listing.datasets else "no datasets yet: record one with %mldataset")


@datasets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show_dataset(name: str, as_json: bool) -> None:
    """Every version of dataset NAME, with the runs that used it."""
    with reader() as client:
        dataset = client.dataset(name)
    if as_json:
        print_json(dataset)
        return
    console.print(Text(f"dataset {dataset.name}", style="bold"))
    table = Table(box=None, header_style="bold")
    for column in ("version", "files", "size", "hash", "created", "source", "runs"):
        table.add_column(column)
    for version in dataset.versions:
        table.add_row(
            version.version,
            str(version.file_count),
            human_size(version.size),
            version.content_hash[:12],
            when(version.created_at),
            Text(version.source_path or ""),
            ", ".join(map(str, version.runs)) or "-",
        )
    console.print(table)
