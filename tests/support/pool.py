"""Helpers for tests that drive a real labrun server with a real pool."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from labrun.client import Client
from labrun.models import DescribeRun

from .server import LabrunServer


def wait_for_pool(server: LabrunServer, workers: int = 1, timeout: float = 90) -> None:
    with Client(server.url, server.token) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = client.pool()
            if state.state == "error":
                raise RuntimeError(state.message)
            if state.state == "ready" and len(state.workers) >= workers:
                return
            time.sleep(0.2)
    raise TimeoutError(f"the pool did not start: {server.log_path.read_text()[-3000:]}")


def wait_for(
    predicate: Callable[[], object], timeout: float = 60, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


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
