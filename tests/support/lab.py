"""A real ``jupyter lab`` with labrun, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from .postgres import free_port

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium floods the closed network (RECIPE.md).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class JupyterLab:
    """``jupyter lab`` in its own process group, with its own config, data and database."""

    def __init__(
        self,
        directory: Path,
        *,
        token: str = "lab-token",
        server_extension: bool = True,
        pool: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server_extension = server_extension
        self.pool = pool
        self.extra_env = env or {}
        self.log_path = self.dir / "lab.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _configure(self) -> dict[str, str]:
        config = self.dir / "config"
        (config / "labconfig").mkdir(parents=True, exist_ok=True)
        # JupyterLab's news toast covers part of the page.
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps(
                {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
            )
        )
        if not self.server_extension:
            # A user config overrides the switch the wheel installs: the frontend without
            # its server extension, as after a broken install.
            (config / "jupyter_server_config.json").write_text(
                json.dumps({"ServerApp": {"jpserver_extensions": {"labrun": False}}})
            )
        (self.dir / "root").mkdir(exist_ok=True)
        return {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(self.dir / "runtime"),
            "LABRUN_DATA_DIR": str(self.dir / "data"),
            **self.extra_env,
        }

    def start(self, timeout: float = 90.0) -> None:
        env = self._configure()
        command = [
            *(sys.executable, "-m", "jupyterlab", "--no-browser"),
            *("--ip", "127.0.0.1", "--port", str(self.port)),
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.dir / 'root'}",
            f"--LabRun.db_url=sqlite:///{self.dir / 'labrun.db'}",
            f"--LabRun.artifact_root={self.dir / 'artifacts'}",
            f"--LabRun.start_pool={self.pool}",
            "--LabRun.user=alice",
        ]
        if os.geteuid() == 0:  # CI containers run as root
            command.append("--allow-root")
        self.process = subprocess.Popen(
            command,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.dir,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}api/status", headers=self.headers, timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"jupyter lab did not start: {self.log_path.read_text()[-3000:]}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call labrun's REST API; the JSON answer, or the raw response for other types."""
        response = httpx.request(
            method, f"{self.url}labrun/api/v1/{path}", headers=self.headers, timeout=30, **kwargs
        )
        response.raise_for_status()
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.json()
        return response

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


@contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium profile (a Playwright browser context)."""
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="labrun-chromium-") as profile,
        sync_playwright() as p,
    ):
        context = p.chromium.launch_persistent_context(
            user_data_dir=profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
