"""``labrun demo``: the main job on a fresh machine.

Starts the embedded server (SQLite in the Jupyter data dir, so a later ``jupyter lab``
shows the same runs, and a local Dask pool), sweeps the example classifier notebook over a
small grid with live progress, runs the sweep's report, and prints what it recorded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx

from labrun.client import Client, discover
from labrun.errors import ServerUnavailable
from labrun.models import PoolStatus, SubmitSweep, SweepReport
from labrun.settings import data_dir

from .follow import follow
from .job_options import code_state, read_notebook
from .output import console
from .reports import wait_for_sweep_report
from .runs import print_runs_table

# Seconds the embedded server gets to stop. It gives its pool 5 s, then kills what is left of
# it, also on a starved CPU; `labrun demo` must be gone within 10 s of a SIGTERM or Ctrl-C.
SERVER_STOP_TIMEOUT = 7.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def embedded_server() -> Iterator[Client]:
    """A running labrun server: one already running, or a new one for the demo's length."""
    try:
        url, token = discover()
        with Client(url, token) as client:
            console.print(f"Using the labrun server at [bold]{url}[/]", soft_wrap=True)
            yield client
        return
    except ServerUnavailable:
        pass
    port, token = _free_port(), secrets.token_hex(16)
    log_path = data_dir() / "demo-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "labrun.cli", "server", "--port", str(port), "--token", token],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise click.ClickException(f"the labrun server did not start; see {log_path}")
            try:
                if httpx.get(
                    f"{url}labrun/api/v1/version",
                    headers={"Authorization": f"token {token}"},
                    timeout=1,
                ).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the labrun server did not answer in 60 s; see {log_path}"
                )
            time.sleep(0.2)
        with Client(url, token) as client:
            console.print(
                f"Started a labrun server for the demo at {url}; it stops when the demo ends "
                f"(the store stays, in {data_dir()})",
                soft_wrap=True,
            )
            yield client
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen[bytes], timeout: float = SERVER_STOP_TIMEOUT) -> None:
    """Stop the embedded server and every process it started, in ``timeout`` seconds or so.

    SIGTERM goes to the server alone, so it closes its pool in order: sent to its whole
    process group, it would kill the pool's workers under their nannies, which would start
    them again. What still runs after the timeout is killed: the server's process group,
    and its descendants in sessions of their own (the workers' kernel zygotes and kernels).
    """
    tree = _descendants(process.pid)
    # A second Ctrl-C must not cut this short and leave the server running.
    with _signals_ignored():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                console.print(f"the labrun server did not stop in {timeout:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Kernels and zygotes leave on their own once their parent is gone: a moment, then
        # they are killed.
        _kill_survivors(tree, grace=1.0)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _descendants(pid: int) -> list[Any]:
    try:
        import psutil

        return list(psutil.Process(pid).children(recursive=True))
    except Exception:  # noqa: BLE001 - no psutil (no local pool), or the server is gone
        return []


def _kill_survivors(processes: list[Any], grace: float) -> None:
    if not processes:
        return
    import psutil

    def alive() -> list[Any]:
        running = []
        for p in processes:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    running.append(p)
        return running

    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in alive():
        with contextlib.suppress(psutil.Error):
            p.kill()


def example_notebooks() -> Path:
    """The example notebooks: installed with labrun, or beside this source tree."""
    for folder in (
        Path(sys.prefix) / "share" / "labrun" / "notebooks",
        Path(__file__).resolve().parents[2] / "notebooks",
    ):
        if (folder / "train_classifier.ipynb").exists():
            return folder
    raise click.ClickException(
        "the example notebooks are missing; reinstall labrun (pip install --force-reinstall labrun)"
    )


def wait_for_pool(client: Client, timeout: float = 120.0) -> PoolStatus:
    """The pool once it has a worker; the local pool takes a few seconds to start."""
    deadline = time.monotonic() + timeout
    with console.status("starting the pool..."):
        while True:
            state = client.pool()
            if state.state == "ready" and state.workers:
                return state
            if state.state in ("error", "disabled") or time.monotonic() > deadline:
                raise click.ClickException(
                    f"the pool is not ready ({state.state}): {state.message or 'no workers'}"
                )
            time.sleep(0.5)


@click.command()
@click.option("--project", default="demo", show_default=True, help="Project of the runs.")
@click.option(
    "--epochs", default=3, show_default=True, type=click.IntRange(1), help="Epochs per run."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the notebooks run and the report is saved (default: in labrun's data dir).",
)
def demo(project: str, epochs: int, workdir: Path | None) -> None:
    """The main job: sweep the example classifier on the local pool and report on it.

    Starts the embedded server (SQLite and a local Dask pool) unless one is running, sweeps
    notebooks/train_classifier.ipynb over 3 learning rates x 2 hidden sizes, runs
    notebooks/sweep_report.ipynb on the result, and prints the runs, the best one and
    where the report is.
    """
    workdir = workdir or data_dir() / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    source = example_notebooks()
    for name in ("train_classifier.ipynb", "sweep_report.ipynb"):
        shutil.copyfile(source / name, workdir / name)
    # SIGTERM stops the demo as Ctrl-C does: through the clean-up that stops the server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        failed, reported = run_demo(project, epochs, workdir, source)
    except KeyboardInterrupt:
        console.print(
            "\nlabrun demo stopped. What it ran so far is in the store: `jupyter lab` shows it."
        )
        return
    raise SystemExit(max(failed, reported))


def run_demo(project: str, epochs: int, workdir: Path, source: Path) -> tuple[int, int]:
    """The demo's sweep and report; the exit statuses of both."""
    with embedded_server() as client:
        pool = wait_for_pool(client)
        console.print(f"Pool: {len(pool.workers)} workers at {pool.scheduler}")
        train_path, train = read_notebook(str(workdir / "train_classifier.ipynb"))
        report_path, report = read_notebook(str(workdir / "sweep_report.ipynb"))
        # The code is the examples' copied here: their git state is that of labrun's own
        # notebooks (in a clone; an installed labrun's have none).
        source_train = str(source / "train_classifier.ipynb")
        source_report = str(source / "sweep_report.ipynb")
        sweep = client.submit_sweep(
            SubmitSweep(
                notebook=train_path,
                content=train,
                parameters={"epochs": epochs},
                grid={"lr": [0.02, 0.1, 0.3], "hidden": [16, 64]},
                project=project,
                name="classifier",
                cwd=str(workdir),
                environment=code_state(source_train, train),
                report=SweepReport(
                    notebook=report_path,
                    content=report,
                    environment=code_state(source_report, report),
                ),
            )
        )
        console.print(f"Sweep [bold]{sweep.sweep.id}[/]: {len(sweep.runs)} runs of {train_path}")
        # Saved here, not linked: the demo's own server is gone once it ends.
        executed = str(workdir / "executed")
        failed = follow(
            client, [r.id for r in sweep.runs], sweep_id=sweep.sweep.id, output_dir=executed
        )
        reported = wait_for_sweep_report(
            client, sweep.sweep.id, str(workdir / "reports"), notebooks=executed
        )
        listing = client.list_runs(parent_id=sweep.sweep.id, sort="-metrics.val_accuracy")
        console.print()
        print_runs_table(listing, show_project=False, metrics=["val_accuracy", "val_loss"])
        best = listing.runs[0]
        console.print(
            f"\nBest run: [bold]{best.id}[/] ({best.name}): val_accuracy "
            f"{best.metrics.get('val_accuracy', float('nan')):.4g}"
        )
        print_next_steps(sweep.sweep.id, [r.id for r in listing.runs])
    return failed, reported


def typed(name: str) -> str:
    """How to type labrun's command ``name`` (``labrun``, ``jupyter``) in a new shell here.

    ``make demo`` runs ``.venv/bin/labrun``, which is not on the PATH of the shell the demo
    prints its next commands into: they name the script by its path then, relative to the
    current folder where it lies under it.
    """
    script = Path(sys.executable).parent / name
    if not script.exists():
        return name
    found = shutil.which(name)
    if found and os.path.samefile(found, script):
        return name
    try:
        path = str(script.relative_to(Path.cwd()))
    except ValueError:
        path = str(script)
    return shlex.quote(path)


def print_next_steps(sweep_id: int, run_ids: list[int]) -> None:
    """The commands to look at what the demo recorded, each ready to type as printed."""
    labrun = typed("labrun")
    commands = [
        f"{labrun} runs --sweep {sweep_id}",
        f"{labrun} show {run_ids[0]}",
        f"{labrun} compare {' '.join(map(str, run_ids[:3]))}",
        f"{labrun} reports",
    ]
    lab = f"{typed('jupyter')} lab"
    if os.geteuid() == 0:  # Jupyter refuses root without it
        lab += " --allow-root"
    # Paths and commands are never broken across lines (soft_wrap), to be copied whole.
    console.print(f"\nEverything is recorded in the store in {data_dir()}", soft_wrap=True)
    console.print("From this folder, in any shell (no server needs to run):")
    for command in commands:
        console.print(f"  {command}", soft_wrap=True, markup=False)
    console.print(
        "To see the runs, the queue history and the report in JupyterLab's sidebar (labrun's "
        "icon on the left; tick two runs and press Compare), run:"
    )
    console.print(f"  {lab}", soft_wrap=True, markup=False)
