"""Job commands: submit, sweep, cancel, rerun, queues, pool.

Parameters follow papermill's command line: ``-p NAME VALUE`` (values read as numbers,
booleans, None, JSON lists or strings) and ``-f params.yaml``.
"""

from __future__ import annotations

from datetime import datetime

import click
from rich.table import Table

from labrun.client import Client
from labrun.models import (
    CreateQueue,
    DescribeGrant,
    DescribeQueue,
    Dispatching,
    GrantStatus,
    HostTelemetry,
    SubmitJob,
    SubmitSweep,
    SweepReport,
)

from .follow import follow
from .job_options import code_state, job_fields, job_options, parse_grid_values, read_notebook
from .output import console, number, print_json, status
from .reports import wait_for_sweep_report


@click.command()
@click.argument("notebook")
@job_options
def submit(
    notebook: str,
    pairs: tuple[tuple[str, str], ...],
    files: tuple[str, ...],
    gpus: int,
    queue: str,
    priority: int,
    project: str,
    name: str | None,
    tags: tuple[str, ...],
    timeout: float | None,
    wait: bool,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Run NOTEBOOK on the pool with papermill, as a tracked notebook job."""
    client = Client()
    fields = job_fields(notebook, pairs, files, gpus, queue, project, name, tags, timeout)
    run = client.submit_job(SubmitJob(**fields, priority=priority))
    if as_json and not wait:
        print_json(run)
        return
    console.print(f"Queued run [bold]{run.id}[/] ({run.name}) on queue {run.queue}.")
    if wait:
        raise SystemExit(follow(client, [run.id], stream_log=True, output_dir=output_dir))
    console.print(f"Follow it with `labrun logs {run.id} --follow`.")


@click.command()
@click.argument("notebook")
@click.option(
    "-g",
    "--grid",
    "grid_specs",
    nargs=2,
    multiple=True,
    required=True,
    metavar="NAME VALUES",
    help="A parameter and its values, comma-separated or a JSON list (repeatable).",
)
@click.option("--samples", type=click.IntRange(min=1), help="Run this many random combinations.")
@click.option("--seed", type=int, help="Seed of the random sample.")
@click.option(
    "--report",
    "report_notebook",
    metavar="NOTEBOOK",
    help="A report notebook to run once every run ended; it gets the sweep's id as `sweep`.",
)
@job_options
def sweep(
    notebook: str,
    grid_specs: tuple[tuple[str, str], ...],
    samples: int | None,
    seed: int | None,
    report_notebook: str | None,
    pairs: tuple[tuple[str, str], ...],
    files: tuple[str, ...],
    gpus: int,
    queue: str,
    priority: int,
    project: str,
    name: str | None,
    tags: tuple[str, ...],
    timeout: float | None,
    wait: bool,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Run NOTEBOOK once per combination of the --grid values, grouped as one sweep."""
    grid = {key: parse_grid_values(key, text) for key, text in grid_specs}
    report = None
    if report_notebook is not None:
        report_path, report_content = read_notebook(report_notebook)
        report = SweepReport(
            notebook=report_path,
            content=report_content,
            environment=code_state(report_path, report_content),
        )
    client = Client()
    result = client.submit_sweep(
        SubmitSweep(
            **job_fields(notebook, pairs, files, gpus, queue, project, name, tags, timeout),
            priority=priority,
            grid=grid,
            samples=samples,
            seed=seed,
            report=report,
        )
    )
    if as_json and not wait:
        print_json(result)
        return
    console.print(
        f"Queued sweep [bold]{result.sweep.id}[/] ({result.sweep.name}): "
        f"{len(result.runs)} runs on queue {queue}."
    )
    if wait:
        code = follow(
            client, [r.id for r in result.runs], sweep_id=result.sweep.id, output_dir=output_dir
        )
        if report is not None:
            # Imported here: the reports module builds on this one.

            code = max(code, wait_for_sweep_report(client, result.sweep.id, output_dir))
        raise SystemExit(code)
    console.print(f"Follow it with `labrun runs --sweep {result.sweep.id}`.")


@click.command()
@click.argument("run_ids", nargs=-1, required=True, type=int)
def cancel(run_ids: tuple[int, ...]) -> None:
    """Cancel queued or running runs (a sweep: all its unfinished runs)."""
    client = Client()
    for run_id in run_ids:
        run = client.cancel_run(run_id)
        console.print(f"Cancelled run {run.id} ({run.name or run.kind.value}).")


@click.command()
@click.argument("run_id", type=int)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail before running anything if the worker's packages differ from the record.",
)
@click.option("--wait", is_flag=True, help="Follow until done; exit 0 only if it completed.")
def rerun(run_id: int, strict: bool, wait: bool) -> None:
    """Queue a run again: a notebook job (same notebook, parameters, GPUs and dataset
    versions) or a %%mlrun cell (same source and stored inputs; `%mlrun_fetch RUN` brings
    its values into a notebook). Its worker compares its packages with the run's record
    before it runs, and names every difference in the log (`--wait` shows them)."""
    client = Client()
    run = client.rerun(run_id, strict=strict)
    console.print(f"Queued run [bold]{run.id}[/], a re-run of {run_id}.")
    if wait:
        raise SystemExit(follow(client, [run.id], stream_log=True))
    console.print(f"Follow it with `labrun logs {run.id} --follow`.")


def _queue_row(q: DescribeQueue) -> tuple[str, ...]:
    return (
        q.name,
        str(q.priority),
        str(q.max_gpus_per_user or ""),
        str(q.queued),
        str(q.running),
        q.description,
    )


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """List the queues, with their queued and running jobs."""
    if ctx.invoked_subcommand is not None:
        return
    listing = Client().queues()
    if as_json:
        print_json(listing)
        return
    table = Table(box=None, header_style="bold")
    for column in ("queue", "priority", "max GPUs/user", "queued", "running", "description"):
        table.add_column(column)
    for q in listing.queues:
        table.add_row(*_queue_row(q))
    console.print(table)


@queues.command("create")
@click.argument("name")
@click.option("--priority", default=0, show_default=True, help="Higher goes first.")
@click.option("--max-gpus-per-user", type=click.IntRange(min=0), help="GPUs per user at once.")
@click.option("--description", default="")
def create_queue(name: str, priority: int, max_gpus_per_user: int | None, description: str) -> None:
    """Create a queue."""
    queue = Client().create_queue(
        CreateQueue(
            name=name,
            priority=priority,
            max_gpus_per_user=max_gpus_per_user,
            description=description,
        )
    )
    console.print(f"Created queue {queue.name} (priority {queue.priority}).")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pool(as_json: bool) -> None:
    """The pool: workers, their CPU and memory, their GPUs, and what each runs."""
    client = Client()
    state = client.pool()
    if as_json:
        print_json(state)
        return
    console.print(
        f"Pool {status(state.state)} at {state.scheduler or '-'}: {len(state.workers)} workers, "
        f"{state.running} jobs running, {state.queued} queued."
    )
    if state.message:
        console.print(f"[red]{state.message}[/]")
    console.print(_dispatching(state.dispatcher))
    # Each worker's latest host sample (CPU and memory), sent with its heartbeats.
    telemetry = {w.id: w.telemetry for w in client.workers().workers} if state.workers else {}
    table = Table(box=None, header_style="bold")
    for column in ("worker", "threads", "CPU", "RAM", "GPU", "util", "memory", "run", "user"):
        table.add_column(column, no_wrap=True)
    for worker in state.workers:
        runs = {r.id: r for r in worker.runs}
        rows: list[tuple[str, ...]] = []
        for gpu in worker.gpus:
            memory = (
                f"{(gpu.memory_used or 0) / 2**30:.1f}/{(gpu.memory_total or 0) / 2**30:.0f} GiB"
            )
            holder = runs.get(gpu.run_id) if gpu.run_id else None
            rows.append(
                (
                    f"{gpu.index}: {gpu.name}",
                    f"{number(gpu.utilization)}%" if gpu.utilization is not None else "",
                    memory,
                    str(gpu.run_id or "[yellow]idle[/]"),
                    holder.user if holder else (gpu.user or ""),
                )
            )
        if not worker.gpus:
            for run in worker.runs or [None]:  # type: ignore[list-item]
                rows.append(("-", "", "", str(run.id) if run else "", run.user if run else ""))
        host = _host_columns(telemetry.get(worker.id))
        for i, row in enumerate(rows):
            first = i == 0
            table.add_row(
                worker.id if first else "",
                str(worker.nthreads) if first else "",
                *(host if first else ("", "")),
                *row,
            )
    console.print(table)
    for line in _grant_lines(client.grants().grants):
        console.print(line)


def _grant_lines(grants: list[DescribeGrant]) -> list[str]:
    """The GPU cells and sessions holding or waiting for GPUs, one line for each."""
    lines = []
    for grant in grants:
        what = "session" if grant.kind == "session" else "cell"
        state = "holds" if grant.status == GrantStatus.granted else "[yellow]waits for[/]"
        lines.append(
            f"{grant.user}'s {what} {grant.key[:8]} {state} {grant.gpus} GPU(s) "
            f"(queue {grant.queue}, since {grant.created_at:%H:%M:%S})"
        )
    return lines


def _dispatching(lease: Dispatching | None) -> str:
    """Which server dispatches the store's jobs (the scheduler of record)."""
    if lease is None:
        return "[yellow]No server dispatches jobs now[/] (one takes over within seconds)."
    since = datetime.fromtimestamp(lease.since).strftime("%Y-%m-%d %H:%M:%S")
    who = "this server" if lease.this_server else f"{lease.user}'s server at {lease.url}"
    return f"Dispatching: {who} ({lease.server}), since {since}."


def _host_columns(sample: HostTelemetry | None) -> tuple[str, str]:
    """A worker's CPU use and memory, as `labrun pool` shows them ("" before a sample)."""
    if sample is None:
        return "", ""
    cpu = f"{sample.cpu_percent:.0f}%" if sample.cpu_percent is not None else ""
    ram = ""
    if sample.ram_used is not None and sample.ram_total:
        ram = f"{sample.ram_used / 2**30:.1f}/{sample.ram_total / 2**30:.0f} GiB"
    return cpu, ram
