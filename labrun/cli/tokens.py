"""``labrun tokens``: the tokens the server issued, one made for a script, and revoking one."""

from __future__ import annotations

import re
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from labrun.client import Client
from labrun.models import DescribeToken

from .output import console, print_json, when

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Lifetime(click.ParamType):
    """A duration: ``90m``, ``12h``, ``7d``, or seconds."""

    name = "lifetime"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
        if match is None or float(match.group(1)) <= 0:
            self.fail(
                f"{value!r} is not a lifetime like 90m, 12h, 7d or 3600 (seconds)", param, ctx
            )
        return float(match.group(1)) * UNITS[match.group(2) or "s"]


def scope_of(token: DescribeToken) -> str:
    return f"run {token.run_id}" if token.scope == "run" else token.scope


@click.group(invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Also the expired and revoked ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def tokens(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List your tokens that still work (an admin: everyone's), newest first.

    Workers, notebook jobs and scripts use tokens the server issued; each has a scope
    (user: all you may do; run: one run and those made under it; pool: the workers), an
    expiry, and an id to revoke it by.
    """
    if ctx.invoked_subcommand is not None:
        return
    with Client() as client:
        listing = client.tokens(all=show_all)
    if as_json:
        print_json(listing)
        return
    if not listing.tokens:
        console.print("No tokens. `labrun tokens create NAME` makes one.")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "user", "scope", "expires", "status"):
        table.add_column(column, no_wrap=column in ("id", "expires"))
    for token in listing.tokens:
        table.add_row(
            token.id,
            Text(token.name),
            Text(token.user),
            scope_of(token),
            token.expires_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            token.status,
        )
    console.print(table)


@tokens.command("create")
@click.argument("name")
@click.option("--run", "run_id", type=int, help="Scope it to this run and the runs made under it.")
@click.option(
    "--lifetime",
    type=Lifetime(),
    help="How long it lives: 90m, 12h, 7d or seconds (default and most: the server's "
    "c.LabRun.token_lifetime).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the token included).")
def create(name: str, run_id: int | None, lifetime: float | None, as_json: bool) -> None:
    """Issue a token NAME that acts for you, for a script or a machine (LABRUN_TOKEN)."""
    with Client() as client:
        issued = client.issue_token(name, run=run_id, lifetime=lifetime)
    if as_json:
        print_json(issued)
        return
    reach = f"run {issued.run_id} and the runs made under it" if issued.run_id else "all you may do"
    console.print(
        Text(
            f"Token {issued.name!r} (id {issued.id}) acts for {issued.user} on {reach} until "
            f"{when(issued.expires_at)}. It is shown only now; set LABRUN_TOKEN to it:"
        )
    )
    # Alone on its line and unwrapped, to copy or to capture.
    click.echo(issued.token)
    console.print(f"`labrun tokens revoke {issued.id}` ends it early.")


@tokens.command("revoke")
@click.argument("token_id")
def revoke(token_id: str) -> None:
    """Revoke the token TOKEN_ID (yours; an admin: anyone's): every server refuses it
    within seconds."""
    with Client() as client:
        token = client.revoke_token(token_id)
    console.print(
        Text(
            f"Revoked token {token.name!r} (id {token.id}) of {token.user}; every server "
            "refuses it within seconds."
        )
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a line.")
def whoami(as_json: bool) -> None:
    """Who the server takes you for, and your roles: admin (every run), lead (the runs of
    the projects you lead), researcher (your own runs)."""
    with Client() as client:
        me = client.identity()
    if as_json:
        print_json(me)
        return
    roles = [f"lead of {', '.join(me.leads)}" if r == "lead" else r for r in me.roles]
    console.print(Text(f"{me.user}: {'; '.join(roles)}"))
