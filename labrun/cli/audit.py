"""``labrun audit``: who did what to which run, queue, token or worker, and when."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from labrun.client import Client
from labrun.models import DescribeAuditEntry

from .output import console, fitted_table, print_json


def target_of(entry: DescribeAuditEntry) -> str:
    if entry.target_type is None:
        return ""
    return f"{entry.target_type} {entry.target_id}"


def status_of(code: int) -> str:
    return f"[{'green' if code < 400 else 'red'}]{code}[/]"


@click.command()
@click.option("--user", "-u", help="Only this user's requests (another's: admins only).")
@click.option(
    "--since",
    "-s",
    help="From this time on: a duration back from now (30m, 12h, 7d, 2w) or an ISO time.",
)
@click.option(
    "--action",
    "-a",
    help="Only this action (run.cancel, queue.create, token.revoke, ...), or every action "
    "on one kind of thing (run, token, ...).",
)
@click.option("--run", "run_id", type=int, help="Only the requests about this run.")
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def audit(
    user: str | None,
    since: str | None,
    action: str | None,
    run_id: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """The audit log, newest first: every change made through the server (refused ones
    too), who made it, to what, and the answer.

    You see your own requests; an admin (c.LabRun.admins) sees everyone's.
    """
    with Client() as client:
        listing = client.audit(user=user, since=since, action=action, run=run_id, limit=limit)
    if as_json:
        print_json(listing)
        return
    if not listing.entries:
        console.print("No audit entries match.")
        return
    columns: list[tuple[str, dict[str, Any]]] = [
        ("time", {"no_wrap": True}),
        ("user", {"no_wrap": True}),
        ("action", {"no_wrap": True}),
        ("target", {"min_width": 8}),
        ("status", {"justify": "right", "no_wrap": True}),
        ("server", {"no_wrap": True}),
    ]
    rows = [
        [
            entry.time.astimezone().strftime("%m-%d %H:%M:%S"),
            escape(entry.user),
            escape(entry.action),
            escape(target_of(entry)),
            status_of(entry.status),
            escape(short_server(entry.server)),
        ]
        for entry in listing.entries
    ]
    # In a narrow terminal, which server answered goes first, then who asked (when only
    # one user's entries are listed, that is known anyway).
    console.print(fitted_table(columns, rows, optional=["server", "user"]))
    if listing.next_cursor is not None:
        console.print(f"[dim]the newest {len(listing.entries)}; --limit shows more[/]")


def short_server(server: str) -> str:
    """``host:pid`` of a server id (``host:pid:start/n``): enough to tell servers apart."""
    return ":".join(server.split(":")[:2])
