"""Helpers for tests that drive a real labrun server with a real pool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from labrun.client import Client
from labrun.models import DescribeRun

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
