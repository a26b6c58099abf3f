"""Helpers for tests that drive a real labrun server with a real pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from labrun.client import Client
from labrun.models import DescribeRun

from .postgres import free_port
from .server import LabrunServer
from .waiting import wait_for


def wait_for_pool(server: LabrunServer, workers: int = 1, timeout: float = 90) -> None:
    """Until the server's pool is ready with ``workers`` workers."""
    with Client(server.url, server.token) as client:

        def failed() -> str | None:
            state = client.pool()
            return f"the pool failed: {state.message}" if state.state == "error" else None

        wait_for(
            lambda: (state := client.pool()).state == "ready" and len(state.workers) >= workers,
            timeout,
            f"the pool to start with {workers} worker(s)",
            interval=0.2,
            gone=failed,
            context=lambda: server.log_path.read_text()[-3000:],
        )


def wait_finished(client: Client, run_id: int, timeout: float = 90) -> DescribeRun:
    def finished() -> DescribeRun | None:
        run = client.get_run(run_id)
        return run if run.status.finished else None

    return wait_for(finished, timeout, f"run {run_id} to finish")  # type: ignore[return-value]


def labrun_cli(
    server: LabrunServer, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `labrun` command against ``server``."""
    return subprocess.run(
        [sys.executable, "-m", "labrun.cli", *args],
        env={**server.env, "COLUMNS": "200"},
        check=False,  # the tests read the exit status
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


def start_scheduler(folder: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A team's own Dask scheduler on a free port (its log in ``folder``): its address, and
    its process (in a process group of its own, for :func:`stop_processes`)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed.cli.dask_scheduler"),
            *("--host", "127.0.0.1", "--port", str(port), "--no-dashboard"),
        ],
        stdout=(folder / "scheduler.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return f"tcp://127.0.0.1:{port}", process


def start_worker(
    address: str, name: str, folder: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`labrun worker ADDRESS --name NAME` (log ``folder/NAME.log``), with ``env`` added."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "labrun.cli", "worker", address, "--name", name),
            *("--local-directory", str(folder / name)),
        ],
        stdout=(folder / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def stop_processes(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each process's group, in order, and wait for it."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
