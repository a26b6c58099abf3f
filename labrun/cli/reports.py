"""Report commands: run a report notebook on the pool, and list the reports.

A report is a notebook job whose result is rendered to HTML (without the code cells unless
``--code``) and recorded as a report: the sidebar's Reports panel lists it, and the server
serves its HTML with a content security policy.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.markup import escape

from labrun.client import Client
from labrun.models import DescribeReport, ReportOptions, SubmitJob
from labrun.settings import API_PREFIX

from .follow import follow
from .job_options import job_fields, parameter_options
from .local import reader, report_location
from .output import console, print_json

# Seconds a finished sweep has to queue its report before `sweep --wait` gives up on it.
SWEEP_REPORT_GRACE = 30.0


def report_url(client: Client, report: DescribeReport) -> str:
    return f"{client.url}{API_PREFIX.lstrip('/')}/reports/{report.id}/html"


def save_report(client: Client, report: DescribeReport, output: str | None) -> str:
    """Where to read a report: saved to ``output`` (a file or folder), or its URL."""
    if output is None:
        return report_url(client, report)
    target = Path(output)
    if target.suffix != ".html":
        target = target / f"report-{report.id}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(client.report_html(report.id))
    return str(target)


def _finish(client: Client, run_id: int, output: str | None) -> int:
    """After a report's run ended: say where the report is; 0 when it was recorded."""
    reports = client.reports(run_id=run_id).reports
    if not reports:
        console.print(f"[red]run {run_id} made no report; `labrun logs {run_id}` says why[/]")
        return 1
    where = save_report(client, reports[0], output)
    console.print(f"Report [bold]{reports[0].id}[/] ({reports[0].name}): {where}", soft_wrap=True)
    return 0


def wait_for_sweep_report(
    client: Client, sweep_id: int, output: str | None, *, notebooks: str | None = None
) -> int:
    """Follow the report a finished sweep queued; 0 when it was made. Its HTML is saved into
    ``output`` and its executed notebook into ``notebooks`` (else their URLs are printed)."""
    deadline = time.monotonic() + SWEEP_REPORT_GRACE
    while (report_run := client.sweep(sweep_id).report_run) is None:
        if time.monotonic() > deadline:
            console.print(f"[red]sweep {sweep_id} queued no report[/]")
            return 1
        time.sleep(0.5)
    console.print(f"The sweep's report runs as run {report_run}.")
    follow(client, [report_run], output_dir=notebooks)
    return _finish(client, report_run, output)


@click.command()
@click.argument("notebook")
@parameter_options
@click.option("--name", help="The report's name (default: the notebook's name).")
@click.option("--project", default="default", show_default=True, help="Project of its run.")
@click.option("--queue", "-q", default="default", show_default=True, help="Queue.")
@click.option("--code", is_flag=True, help="Keep the code cells in the HTML.")
@click.option(
    "-o", "--output", help="Save the HTML here (a .html file, or a folder); else print its URL."
)
@click.option("--no-wait", is_flag=True, help="Queue it and return.")
def report(
    notebook: str,
    pairs: tuple[tuple[str, str], ...],
    files: tuple[str, ...],
    name: str | None,
    project: str,
    queue: str,
    code: bool,
    output: str | None,
    no_wait: bool,
) -> None:
    """Run the report NOTEBOOK on the pool and record its HTML as a report."""
    fields = job_fields(notebook, pairs, files, 0, queue, project, name, (), None)
    client = Client()
    run = client.submit_job(
        SubmitJob(**fields, report=ReportOptions(name=name or fields["name"], code=code))
    )
    console.print(f"Queued the report as run [bold]{run.id}[/] on queue {run.queue}.")
    if no_wait:
        console.print(f"`labrun reports` lists it once run {run.id} completed.")
        return
    if follow(client, [run.id], stream_log=True) != 0:
        raise SystemExit(1)
    raise SystemExit(_finish(client, run.id, output))


@click.command()
@click.option("--run", "run_id", type=int, help="Only the reports of this run or sweep.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reports(run_id: int | None, as_json: bool) -> None:
    """List the reports, newest first."""
    with reader() as client:
        listing = client.reports(**({"run_id": run_id} if run_id else {}))
        if as_json:
            print_json(listing)
            return
        if not listing.reports:
            console.print("No reports yet: `labrun report NOTEBOOK` or `labrun sweep --report`.")
        # One block a report, not a table: the paths and URLs are what a reader copies, and
        # a table in a narrow terminal would cut them.
        for r in listing.reports:
            console.print(
                f"[bold]Report {r.id}[/]  {escape(r.name)}  [dim](run {r.run_id or '-'} by "
                f"{escape(r.user)}, {r.created_at.astimezone():%Y-%m-%d %H:%M})[/]",
                soft_wrap=True,
            )
            console.print(f"  notebook  {escape(r.notebook)}", soft_wrap=True)
            console.print(f"  html      {escape(report_location(client, r))}", soft_wrap=True)
