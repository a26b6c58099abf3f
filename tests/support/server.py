"""``labrun server`` as a real subprocess: what a script, a kernel or the CLI talks to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from .postgres import free_port
from .waiting import wait_for


def stop_group(process: subprocess.Popen[bytes] | None, grace: float = 20) -> None:
    """Stop a process started with ``start_new_session`` and all it started: SIGTERM, then
    SIGKILL after ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def labrun_answers(url: str, token: str) -> bool:
    """Whether a labrun server answers at ``url`` (``http://host:port/``) to ``token``."""
    headers = {"Authorization": f"token {token}"}
    return httpx.get(f"{url}labrun/api/v1/version", headers=headers, timeout=2).is_success


def wait_started(
    process: subprocess.Popen[bytes],
    ready: Callable[[], object],
    what: str,
    log_path: Path,
    timeout: float,
) -> None:
    """Until ``ready()`` is true; fails with the log's tail if ``process`` exits first or
    ``timeout`` runs out. A ``ready`` that cannot connect yet counts as not ready."""
    wait_for(
        ready,
        timeout,
        what,
        interval=0.2,
        retry_on=(httpx.HTTPError, OSError),
        gone=lambda: f"{what} exited" if process.poll() is not None else None,
        context=lambda: log_path.read_text()[-3000:],
    )


class LabrunServer:
    """A labrun server in its own process group; restartable on the same port and data."""

    def __init__(
        self,
        directory: Path,
        *,
        token: str = "test-token",
        db_url: str | None = None,
        pool: bool = False,
        options: list[str] | None = None,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        host: str = "127.0.0.1",
        wrap: Sequence[str] = (),
        program: list[str] | None = None,
    ) -> None:
        self.python = python  # another venv's, to run labrun as installed there
        self.host = host
        self.wrap = list(wrap)  # a prefix for its command: `ip netns exec NS` (support.netns)
        # What takes `labrun server`'s arguments (a benchmark's own launcher of it).
        self.program = program or [python, "-m", "labrun.cli", "server"]
        self.pool = pool
        self.options = options or []
        self.extra_env = env or {}
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.token = token
        self.db_url = db_url or f"sqlite:///{self.dir / 'labrun.db'}"
        self.url = f"http://{host}:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "server.log"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client of this server runs with."""
        return {**os.environ, "LABRUN_SERVER_URL": self.url, "LABRUN_TOKEN": self.token}

    def start(self, timeout: float = 180.0) -> None:
        # Generous: on two cores shared with other test processes a server with its pool
        # took over a minute to answer once; one that never answers still fails.
        command = [
            *self.wrap,
            *self.program,
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--token",
            self.token,
            "--db-url",
            self.db_url,
            f"--LabRun.artifact_root={self.dir / 'artifacts'}",
            f"--ServerApp.root_dir={self.dir}",
            f"--LabRun.start_pool={self.pool}",
            *self.options,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.dir,
            env={**os.environ, "LABRUN_DATA_DIR": str(self.dir / "data"), **self.extra_env},
        )
        try:
            wait_started(
                self.process,
                lambda: labrun_answers(self.url, self.token),
                "labrun server",
                self.log_path,
                timeout,
            )
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def stop(self) -> None:
        stop_group(self.process, grace=15)
