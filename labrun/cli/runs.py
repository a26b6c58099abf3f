"""Read-side commands: runs, show, logs, compare."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from labrun.client import Client
from labrun.models import RunList, RunStatus

from .follow import RunEvents
from .local import reader
from .output import ago, console, duration, fitted_table, number, print_json, status, when

# Seconds between reads of a followed log when no event came (one may have gone astray).
RESYNC = 10.0


def print_runs_table(
    listing: RunList, *, show_project: bool = True, metrics: list[str] | None = None
) -> None:
    """Runs as a table: status, user, timing, and a few parameters and latest metrics
    (``metrics``, else the first three by name), whole even in an 80-column terminal."""
    if not listing.runs:
        console.print("No runs yet. Start one with labrun.init() in a script or notebook.")
        return
    metric_keys = metrics or sorted({k for r in listing.runs for k in r.metrics})[:3]
    # The parameters that tell the runs apart come first.
    param_keys = sorted(
        {k for r in listing.runs for k in r.params},
        key=lambda k: (len({repr(r.params.get(k)) for r in listing.runs}) == 1, k),
    )[:3]
    names = ["id", "project", "name", "status", "user", "started", "duration"]
    if not show_project:
        names.remove("project")
    columns: list[tuple[str, dict[str, Any]]] = [
        (
            name,
            {"justify": "right", "no_wrap": True}
            if name == "id"
            else {"no_wrap": True}
            if name != "name"
            else {"min_width": 12},
        )
        for name in names
    ]
    columns += [(key, {"style": "blue", "no_wrap": True}) for key in param_keys]
    columns += [
        (key, {"justify": "right", "style": "green", "no_wrap": True}) for key in metric_keys
    ]
    rows = []
    for r in listing.runs:
        cells = {
            "id": str(r.id),
            "project": escape(r.project),
            "name": escape(r.name or ""),
            "status": status(r.status.value),
            "user": escape(r.user),
            "started": ago(r.started_at) if r.started_at else "",
            "duration": duration(r.duration),
        }
        rows.append(
            [
                *(cells[c] for c in names),
                *(escape(number(r.params.get(k))) for k in param_keys),
                *(number(r.metrics.get(k)) for k in metric_keys),
            ]
        )
    # What goes first when the terminal is narrow: the least telling columns, then the
    # parameters and metrics after the first two of each (the metrics are what a table of
    # runs is read for).
    optional = ["started", "user", "project", *param_keys[2:], "duration", *metric_keys[2:]]
    console.print(fitted_table(columns, rows, optional=optional))
    if listing.total > len(listing.runs):
        console.print(f"[dim]{len(listing.runs)} of {listing.total} runs; --limit shows more[/]")


@click.command()
@click.option("--project", "-p", help="Only runs of this project.")
@click.option(
    "--status",
    "-s",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in RunStatus]),
    help="Only runs in this status (repeatable).",
)
@click.option("--user", "-u", help="Only runs of this user.")
@click.option("--sweep", "sweep_id", type=int, help="Only the runs of this sweep.")
@click.option(
    "--sort",
    default="-created_at",
    show_default=True,
    help="Column, params.NAME or metrics.NAME; '-' for descending.",
)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs(
    project: str | None,
    statuses: tuple[str, ...],
    user: str | None,
    sweep_id: int | None,
    sort: str,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first."""
    with reader() as client:
        listing = client.list_runs(
            project=project,
            status=list(statuses) or None,
            user=user,
            parent_id=sweep_id,
            sort=sort,
            limit=limit,
        )
    if as_json:
        print_json(listing)
        return
    print_runs_table(listing, show_project=project is None)


@click.command()
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def show(run_id: int, as_json: bool) -> None:
    """Show one run: parameters, latest metrics, datasets, artifacts."""
    with reader() as client:
        run = client.get_run(run_id)
        artifacts = client.artifacts(run_id).artifacts
        datasets = client.run_datasets(run_id)
    if as_json:
        print_json(
            {
                # As the server writes it: NaN as "NaN", which every JSON parser reads.
                **json.loads(run.model_dump_json()),
                "artifacts": [a.model_dump(mode="json") for a in artifacts],
                "datasets": datasets,
            }
        )
        return
    console.print(f"[bold]Run {run.id}[/] {run.name or ''}  {status(run.status.value)}")
    facts = [
        ("project", run.project),
        ("user", run.user),
        ("kind", run.kind.value),
        ("queue", run.queue or ""),
        ("worker", run.worker or ""),
        ("created", when(run.created_at)),
        ("started", when(run.started_at)),
        ("ended", when(run.ended_at)),
        ("duration", duration(run.duration)),
    ]
    for label, value in facts:
        if value:
            console.print(f"  {label:<9} {value}")
    if run.error:
        console.print(f"  [red]error[/]     {run.error.get('message', run.error)}")
        for line in run.error.get("traceback") or []:
            console.print(Text.from_ansi(line))
    for title, values in (("Parameters", run.params), ("Latest metrics", run.metrics)):
        if values:
            table = Table(title=title, title_justify="left", box=None, header_style="bold")
            table.add_column("name")
            table.add_column("value", justify="right")
            for key in sorted(values):
                table.add_row(key, number(values[key]))
            console.print(table)
    if datasets:
        table = Table(title="Datasets", title_justify="left", box=None, header_style="bold")
        for column in ("dataset", "version", "role", "hash"):
            table.add_column(column)
        for d in datasets:
            table.add_row(d["dataset"], d["version"], d["role"], d["content_hash"][:12])
        console.print(table)
    if artifacts:
        table = Table(title="Artifacts", title_justify="left", box=None, header_style="bold")
        for column in ("name", "size", "type", "sha256"):
            table.add_column(column, justify="right" if column == "size" else "left")
        for a in artifacts:
            table.add_row(a.name, f"{a.size:,}", a.content_type, a.sha256[:12])
        console.print(table)


@click.command()
@click.argument("run_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    help="Seconds between polls with --follow, where the server's event stream is not at hand.",
)
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    help="Only this attempt's lines (a job re-queued after its worker died ran again).",
)
def logs(run_id: int, follow: bool, interval: float, attempt: int | None) -> None:
    """Print a run's log (each retried attempt's part starts with a `--- attempt N ---` line)."""
    offset = 0
    with reader() as client, contextlib.ExitStack() as stack:
        events = None
        if follow and isinstance(client, Client):
            # Subscribed before the first read, so no line written after it goes unseen.
            events = RunEvents(client, [run_id])
            stack.callback(events.close)
            if not events.connect():
                events = None
        while True:
            tail = client.logs(run_id, offset=offset, attempt=attempt)
            for entry in tail.entries:
                click.echo(entry.text, nl=False, err=entry.stream == "stderr")
            offset = tail.next_offset
            if tail.entries:
                continue
            if not follow or client.get_run(run_id).status.finished:
                return
            if events is not None and events.connected:
                # New lines and the run's end both come as events; the timeout is a resync.
                events.changes(RESYNC)
            else:
                time.sleep(interval)


@click.command()
@click.argument("run_ids", type=int, nargs=-1, required=True)
@click.option("--all", "show_all", is_flag=True, help="Also show parameters that are equal.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def compare(run_ids: tuple[int, ...], show_all: bool, as_json: bool) -> None:
    """Compare runs: parameters and latest metrics side by side."""
    with reader() as client:
        comparison = client.compare(run_ids)
    if as_json:
        print_json(comparison)
        return
    table = Table(box=None, header_style="bold")
    table.add_column("", no_wrap=True)
    for r in comparison.runs:
        table.add_column(f"{r.id} {r.name or ''}".strip(), justify="right")
    table.add_row("[bold]status[/]", *(status(r.status.value) for r in comparison.runs))
    for section, rows in (("params", comparison.params), ("metrics", comparison.metrics)):
        shown = [row for row in rows if show_all or row.differs or section == "metrics"]
        if shown:
            table.add_section()
            for row in shown:
                style = "yellow" if row.differs else ""
                cells = [f"[{style}]{number(v)}[/]" if style else number(v) for v in row.values]
                table.add_row(f"{section}.{row.key}", *cells)
    console.print(table)
