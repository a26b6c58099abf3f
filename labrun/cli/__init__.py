"""The ``labrun`` command line: the same operations as the sidebar and the Python API."""

from __future__ import annotations

import sys

import click

from labrun import __version__
from labrun.errors import LabrunError

from .audit import audit
from .datasets import datasets
from .demo import demo
from .jobs import cancel, pool, queues, rerun, submit, sweep
from .reports import report, reports
from .runs import compare, logs, runs, show
from .server import db, server
from .tokens import tokens, whoami
from .worker import worker


class LabrunGroup(click.Group):
    """Turns labrun's own errors into one clear line and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except LabrunError as err:
            click.echo(f"Error: {err.message}", err=True)
            sys.exit(1)


@click.group(cls=LabrunGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labrun")
def main() -> None:
    """labrun: run notebooks on a shared GPU pool and keep an exact record of every run.

    Commands that read runs find the server from LABRUN_SERVER_URL and LABRUN_TOKEN, or
    else from the Jupyter servers running on this machine.
    """


for command in (
    demo,
    runs,
    show,
    logs,
    compare,
    datasets,
    submit,
    sweep,
    cancel,
    rerun,
    queues,
    pool,
    report,
    reports,
    tokens,
    audit,
    whoami,
    server,
    worker,
    db,
):
    main.add_command(command)
