"""A real ``jupyter lab`` with labrun, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from .postgres import free_port
from .server import stop_group, wait_started

CHROMIUM = "/usr/bin/chromium"
SIDEBAR_TAB = '.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="labrun-sidebar"]'
# Without the background-networking flags Chromium keeps calling Google services, which a
# closed network answers slowly or not at all.
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
        python: str = sys.executable,
    ) -> None:
        self.python = python  # another venv's, to run labrun as installed there
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

    @property
    def data_dir(self) -> Path:
        """The embedded store (``labrun.db`` and ``artifacts/``): ``LABRUN_DATA_DIR``, which a
        caller may point at an existing store, as a user's ``jupyter lab`` after the demo."""
        return Path(self.extra_env.get("LABRUN_DATA_DIR", self.dir / "data"))

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
            **self.extra_env,
            "LABRUN_DATA_DIR": str(self.data_dir),
        }

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The ``jupyter lab`` command line and its environment."""
        env = self._configure()
        command = [
            *(self.python, "-m", "jupyterlab", "--no-browser"),
            *("--ip", "127.0.0.1", "--port", str(self.port)),
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.dir / 'root'}",
            f"--LabRun.start_pool={self.pool}",
            "--LabRun.user=alice",
        ]
        if os.geteuid() == 0:  # CI containers run as root
            command.append("--allow-root")
        return command, env

    def start(self, timeout: float = 90.0) -> None:
        command, env = self.command()
        self.process = subprocess.Popen(
            command,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.dir,
            env=env,
        )
        try:
            wait_started(
                self.process,
                lambda: (
                    httpx.get(f"{self.url}api/status", headers=self.headers, timeout=1).is_success
                ),
                "jupyter lab",
                self.log_path,
                timeout,
            )
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

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
        stop_group(self.process)


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


def open_sidebar(page: Any, lab: JupyterLab, path: str = "lab", *, widen: bool = True) -> None:
    """JupyterLab at ``path`` with labrun's sidebar shown, and widened as a user would to see
    every column of the Runs table (``widen=False``: at JupyterLab's default width)."""
    page.goto(f"{lab.url}{path}?token={lab.token}")
    page.wait_for_selector(SIDEBAR_TAB, timeout=90_000)
    page.click(SIDEBAR_TAB)
    page.wait_for_selector(".jp-labrun-sidebar")
    if not widen:
        return
    # Drag the sidebar's edge: the Runs table shows all its columns from about 650px.
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first.bounding_box()
    page.mouse.move(handle["x"] + 1, handle["y"] + 200)
    page.mouse.down()
    page.mouse.move(handle["x"] + 450, handle["y"] + 200, steps=5)
    page.mouse.up()


def show_panel(page: Any, label: str) -> None:
    page.click(f'.jp-labrun-sidebar .lm-TabBar-tab:has-text("{label}")')


def run_row(run_id: int) -> str:
    return f'.jp-labrun-row[data-run-id="{run_id}"]'


def screenshot(page: Any, name: str, fallback: Path) -> None:
    """Save ``name.png`` into ``LABRUN_SCREENSHOTS`` (the README's pictures), else ``fallback``."""
    folder = Path(os.environ.get("LABRUN_SCREENSHOTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))
