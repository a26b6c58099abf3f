"""Job commands: submit, sweep, cancel, rerun, queues, pool.

Parameters follow papermill's command line: ``-p NAME VALUE`` (values read as numbers,
booleans, None, JSON lists or strings) and ``-f params.yaml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from labrun import environment
from labrun.client import Client
from labrun.errors import InvalidRequest
from labrun.models import (
    CodeState,
    CreateQueue,
    DescribeQueue,
    HostTelemetry,
    SubmitJob,
    SubmitSweep,
    SweepReport,
)
from labrun.params import load_notebook, parse_value

from .follow import follow
from .output import console, number, print_json, status


def read_notebook(path: str) -> tuple[str, dict[str, Any]]:
    """The notebook at ``path`` (its absolute path and JSON), or a clear error."""
    file = Path(path).expanduser()
    if not file.exists():
        raise InvalidRequest(f"no notebook at {path!r}")
    if file.is_dir():
        raise InvalidRequest(f"{path!r} is a folder; name an .ipynb file")
    return str(file.resolve()), load_notebook(file.read_bytes(), where=repr(path))


def code_state(path: str, content: dict[str, Any]) -> CodeState:
    """The notebook's git state and local modules, read here, where the notebook is."""
    return CodeState.model_validate(environment.code_state(Path(path), content))


def read_parameters(pairs: tuple[tuple[str, str], ...], files: tuple[str, ...]) -> dict[str, Any]:
    """``-f`` files first, then ``-p`` pairs (which win), as papermill merges them."""
    import yaml

    values: dict[str, Any] = {}
    for name in files:
        try:
            loaded = yaml.safe_load(Path(name).read_text())
        except OSError as err:
            raise InvalidRequest(f"cannot read parameters file {name!r}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise InvalidRequest(f"parameters file {name!r} is not valid YAML: {err}") from err
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise InvalidRequest(f"parameters file {name!r} must hold a mapping of name: value")
        values.update(loaded)
    for key, text in pairs:
        values[key] = parse_value(text)
    return values


def parse_grid_values(name: str, text: str) -> list[Any]:
    """``0.1,0.01`` or a JSON list ``[1, [2, 3]]``."""
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError as err:
            raise InvalidRequest(f"--grid {name}: {text!r} is not a JSON list ({err})") from err
        if not isinstance(values, list):
            raise InvalidRequest(f"--grid {name}: give a JSON list or comma-separated values")
        return values
    return [parse_value(part.strip()) for part in text.split(",") if part.strip()]


def parameter_options(f: Any) -> Any:
    """papermill's -p NAME VALUE and -f params.yaml, for every command that runs a notebook."""
    f = click.option(
        "-f",
        "--parameters-file",
        "files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A YAML file of parameters (repeatable; -p wins).",
    )(f)
    return click.option(
        "-p",
        "--parameters",
        "pairs",
        nargs=2,
        multiple=True,
        metavar="NAME VALUE",
        help="A parameter of the notebook's 'parameters' cell (repeatable).",
    )(f)


def job_options(f: Any) -> Any:
    """The options every job command shares."""
    options = [
        click.option(
            "--gpus", default=0, show_default=True, type=click.IntRange(0, 64), help="GPUs."
        ),
        click.option("--queue", "-q", default="default", show_default=True, help="Queue."),
        click.option(
            "--priority",
            default=0,
            show_default=True,
            type=click.IntRange(-(2**31), 2**31 - 1),
            help="Among your own queued jobs in the queue, a higher one starts first.",
        ),
        click.option("--project", default="default", show_default=True, help="Project."),
        click.option("--name", help="Run name (default: the notebook's name)."),
        click.option("--tag", "tags", multiple=True, help="A label (repeatable)."),
        click.option(
            "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds per cell."
        ),
        click.option(
            "--wait", is_flag=True, help="Follow until done; exit 0 only if all completed."
        ),
        click.option(
            "-o",
            "--output-dir",
            type=click.Path(file_okay=False),
            help="With --wait: save the executed notebooks here.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return parameter_options(f)


def _job_fields(
    notebook: str,
    pairs: tuple[tuple[str, str], ...],
    files: tuple[str, ...],
    gpus: int,
    queue: str,
    project: str,
    name: str | None,
    tags: tuple[str, ...],
    timeout: float | None,
) -> dict[str, Any]:
    """What ``submit`` and ``sweep`` send alike, from their shared options."""
    path, content = read_notebook(notebook)
    return {
        "notebook": path,
        "content": content,
        "parameters": read_parameters(pairs, files),
        "gpus": gpus,
        "queue": queue,
        "project": project,
        "name": name or Path(path).stem,
        "tags": list(tags),
        # Workers on this machine run the notebook beside its files.
        "cwd": os.path.dirname(path),
        "timeout": timeout,
        # Once per command: a sweep's runs share one reading of the code.
        "environment": code_state(path, content),
    }


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
    fields = _job_fields(notebook, pairs, files, gpus, queue, project, name, tags, timeout)
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
            **_job_fields(notebook, pairs, files, gpus, queue, project, name, tags, timeout),
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
            from .reports import wait_for_sweep_report

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


def _host_columns(sample: HostTelemetry | None) -> tuple[str, str]:
    """A worker's CPU use and memory, as `labrun pool` shows them ("" before a sample)."""
    if sample is None:
        return "", ""
    cpu = f"{sample.cpu_percent:.0f}%" if sample.cpu_percent is not None else ""
    ram = ""
    if sample.ram_used is not None and sample.ram_total:
        ram = f"{sample.ram_used / 2**30:.1f}/{sample.ram_total / 2**30:.0f} GiB"
    return cpu, ram
