"""Real labrun servers with real local Dask pools, and helpers to drive them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.notebooks import write_notebook
from support.server import LabrunServer

from labrun.client import Client
from labrun.models import DescribeRun


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabrunServer]:
    """One server with a local pool of two CPU workers, shared by a module's tests."""
    server = LabrunServer(tmp_path_factory.mktemp("pool-server"), pool=True)
    server.start()
    wait_for_pool(server)
    yield server
    server.stop()


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


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    """A folder of the test notebooks."""
    write_notebook(
        tmp_path / "params.ipynb",
        "import labrun\nprint('hello', x, lr)\nfor i in range(5):\n    labrun.log({'loss': lr / (i + 1)})",
        "result = x * 2\nresult",
        parameters="x = 1\nlr = 0.1\nname = 'a'",
    )
    write_notebook(
        tmp_path / "fails.ipynb",
        "a = 1",
        "raise ValueError('bad value ' + str(a))",
        "never = True",
    )
    write_notebook(
        tmp_path / "slow.ipynb",
        "import time\nprint('started', flush=True)\ntime.sleep(seconds)\nprint('finished')",
        parameters="seconds = 60",
    )
    return tmp_path
