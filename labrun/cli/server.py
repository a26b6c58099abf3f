"""Server-side commands: ``labrun server`` and ``labrun db``."""

from __future__ import annotations

import os
import sys

import click

from labrun.settings import data_dir


def _server_parts():
    try:
        from labrun.jupyter_ext.store import database
    except ImportError as err:  # the core was installed without the server extra
        raise click.ClickException(
            f"the labrun server needs its extra dependencies ({err.name} is missing): "
            "pip install 'labrun[server]'"
        ) from err
    return database


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--ip", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--db-url",
    envvar="LABRUN_DB_URL",
    help="Run store URL (default: SQLite in the Jupyter data dir).",
)
@click.option(
    "--token",
    envvar="LABRUN_SERVER_TOKEN",
    help="Token clients must send (default: a random one, printed).",
)
@click.argument("jupyter_args", nargs=-1, type=click.UNPROCESSED)
def server(
    ip: str, port: int, db_url: str | None, token: str | None, jupyter_args: tuple[str, ...]
) -> None:
    """Run the labrun server alone, without JupyterLab.

    Extra arguments go to Jupyter Server (e.g. --ServerApp.allow_remote_access=True).
    """
    _server_parts()
    # jsonschema builds an IRI grammar when it finds rfc3987_syntax (1.5 s of CPU at every
    # start here); Jupyter's event schemas check no IRI, so this server goes without it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    from labrun.jupyter_ext.app import LabRun

    argv = [f"--ServerApp.ip={ip}", f"--ServerApp.port={port}", "--ServerApp.open_browser=False"]
    if db_url:
        argv.append(f"--LabRun.db_url={db_url}")
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    if os.geteuid() == 0:
        argv.append("--ServerApp.allow_root=True")
    LabRun.launch_instance(argv=[*argv, *jupyter_args])


@click.group()
def db() -> None:
    """Manage the run store's schema."""


def _engine(db_url: str | None):
    database = _server_parts()
    url = db_url or database.sqlite_url(data_dir() / "labrun.db")
    return database, database.make_engine(url)


@db.command()
@click.option(
    "--db-url", envvar="LABRUN_DB_URL", help="Run store URL (default: the embedded SQLite)."
)
def upgrade(db_url: str | None) -> None:
    """Upgrade the database to this labrun's schema."""
    database, engine = _engine(db_url)
    # Refuses, in one line, a database that a newer labrun wrote.
    before, head = database.check_schema(engine, auto_upgrade=True)
    click.echo(f"schema {before or 'empty'} -> {head}")


@db.command()
@click.option(
    "--db-url", envvar="LABRUN_DB_URL", help="Run store URL (default: the embedded SQLite)."
)
def current(db_url: str | None) -> None:
    """Print the database's schema revision and the one this labrun needs."""
    database, engine = _engine(db_url)
    revision, head = database.schema_revisions(engine)
    click.echo(f"database: {revision or 'empty'}; this labrun: {head}")
