"""What users install: the sdist and the wheel built from a clean copy, with no Node.js on PATH.

The wheel is installed (not editable) into fresh virtual environments: everything
(``labrun[all]``) for a JupyterLab server, and ``labrun[executor]`` alone for a GPU host's
worker. Nothing here imports labrun from the checkout: each command runs from its venv, with
a PATH that has that venv and a few system tools, and no ``node``.

``LABRUN_TEST_WHEEL=path/to/labrun-*.whl`` tests a wheel built already instead of building one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.lab import SIDEBAR_TAB, JupyterLab, chromium
from support.notebooks import write_notebook
from support.pool import wait_for_pool
from support.postgres import free_port
from support.server import LabrunServer

from labrun.client import Client
from labrun.models import RunStatus

pytestmark = pytest.mark.timeout(1500)

REPO = Path(__file__).resolve().parents[2]
# The system tools a user's shell has besides the venv; Node.js is not one of them.
TOOLS = ("git", "sh", "bash", "env", "uname")


@dataclass
class Venv:
    path: Path
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def run(self, *command: str, timeout: float = 600, **kwargs: object) -> str:
        """``command`` from this venv's bin; its output, or a failure that shows it."""
        result = subprocess.run(
            [str(self.path / "bin" / command[0]), *command[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
        assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr}"
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def no_node_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH of the few tools a build and a server need, without ``node``."""
    tools = tmp_path_factory.mktemp("tools")
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed on this machine"
        (tools / tool).symlink_to(found)
    assert shutil.which("node", path=str(tools)) is None
    return str(tools)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, no_node_path: str) -> Path:
    """The sdist and, built from it as ``python -m build`` does, the wheel."""
    out = tmp_path_factory.mktemp("dist")
    given = os.environ.get("LABRUN_TEST_WHEEL")
    if given:
        shutil.copy(given, out)
        return out
    # A clean copy: the files git tracks or would track, without build outputs or node_modules.
    clone = tmp_path_factory.mktemp("clone") / "labrun"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(out), str(clone)],
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{no_node_path}"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "building the sidebar with node from" in result.stderr
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("labrun-*.whl")
    return wheel


def make_venv(root: Path, name: str, requirement: str, no_node_path: str) -> Venv:
    """A fresh venv with ``requirement`` installed (by uv: pip's resolver takes minutes)."""
    path = root / name
    uv = str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(path)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(path / "bin" / "python"), requirement],
        check=True,
        timeout=1200,
    )
    home = root / f"{name}-home"  # no user config of this machine's leaks in
    home.mkdir()
    env = {
        "PATH": f"{path / 'bin'}{os.pathsep}{no_node_path}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
    }
    return Venv(path, env)


@pytest.fixture(scope="module")
def full(dist: Path, tmp_path_factory: pytest.TempPathFactory, no_node_path: str) -> Venv:
    """A team server's install: ``pip install 'labrun[all]'`` from the wheel."""
    root = tmp_path_factory.mktemp("venvs")
    return make_venv(root, "full", f"{wheel_of(dist)}[all]", no_node_path)


def test_the_sdist_carries_the_sidebar_sources_and_the_wheel_its_build(dist: Path) -> None:
    sdists = list(dist.glob("labrun-*.tar.gz"))
    if sdists:  # absent when testing a given wheel
        with tarfile.open(sdists[0]) as sdist:
            names = sdist.getnames()
        assert any(name.endswith("labextension/src/index.ts") for name in names)
        assert any(name.endswith("build_backend/labrun_build.py") for name in names)
        assert not any("/prebuilt/" in name or "/node_modules/" in name for name in names)
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = wheel.namelist()
    data = "labrun-0.1.0.data/data/"
    assert f"{data}share/jupyter/labextensions/labrun/package.json" in names
    assert any(
        name.startswith(f"{data}share/jupyter/labextensions/labrun/static/") for name in names
    )
    assert f"{data}etc/jupyter/jupyter_server_config.d/labrun.json" in names


def test_jupyter_lists_labrun_enabled(full: Venv) -> None:
    # Jupyter colours "enabled" whatever the terminal.
    servers = re.sub(r"\x1b\[[0-9;]*m", "", full.run("jupyter", "server", "extension", "list"))
    assert "labrun enabled" in servers and "labrun 0.1.0 OK" in servers, servers
    frontends = re.sub(r"\x1b\[[0-9;]*m", "", full.run("jupyter", "labextension", "list"))
    assert "labrun v0.1.0 enabled OK" in frontends, frontends


@pytest.fixture(scope="module")
def lab(full: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """``jupyter lab`` of the wheel's venv, with its local pool."""
    server = JupyterLab(
        tmp_path_factory.mktemp("lab"), python=full.python, env={"PATH": full.env["PATH"]}
    )
    server.start(timeout=180)
    yield server
    server.stop()


def test_a_notebook_job_runs_on_the_local_pool(full: Venv, lab: JupyterLab, tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "double.ipynb", "print('twice', 2 * x)", parameters="x = 1"
    )
    env = {**full.env, "LABRUN_SERVER_URL": lab.url, "LABRUN_TOKEN": lab.token, "COLUMNS": "200"}
    output = Venv(full.path, env).run(
        "labrun", "submit", str(notebook), "-p", "x", "21", "--wait", timeout=600, cwd=tmp_path
    )
    assert "completed" in output, output
    (run,) = lab.api("GET", "runs")["runs"]
    assert run["status"] == "completed" and run["params"] == {"x": 21}
    log = lab.api("GET", f"runs/{run['id']}/logs")["entries"]
    assert "twice 42" in "".join(entry["text"] for entry in log)


def test_chromium_loads_the_sidebar_from_the_wheel(lab: JupyterLab) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{lab.url}lab?token={lab.token}")
        page.wait_for_selector(SIDEBAR_TAB, timeout=120_000)
        page.click(SIDEBAR_TAB)
        page.wait_for_selector(".jp-labrun-sidebar .jp-labrun-row[data-run-id]", timeout=60_000)
        assert "double" in page.inner_text(".jp-labrun-sidebar")


def test_a_worker_only_install_joins_a_scheduler_and_runs_a_job(
    full: Venv, dist: Path, tmp_path: Path, no_node_path: str
) -> None:
    worker_venv = make_venv(tmp_path, "worker", f"{wheel_of(dist)}[executor]", no_node_path)
    # What a GPU host has: the executor, not the server, its store or JupyterLab.
    missing = worker_venv.run(
        "python",
        "-c",
        "import importlib.util as u; print(u.find_spec('sqlalchemy'), u.find_spec('jupyterlab'))",
    )
    assert missing.strip() == "None None", missing
    address = f"tcp://127.0.0.1:{free_port()}"
    processes = [
        subprocess.Popen(
            [
                full.python,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                address.rsplit(":", 1)[1],
                "--no-dashboard",
            ],
            stdout=(tmp_path / "scheduler.log").open("wb"),
            stderr=subprocess.STDOUT,
            env=full.env,
            start_new_session=True,
            cwd=tmp_path,  # not the checkout, whose labrun/ folder `python -m` would import
        ),
        subprocess.Popen(
            [
                str(worker_venv.path / "bin" / "labrun"),
                "worker",
                address,
                "--name",
                "gpu-host",
                "--local-directory",
                str(tmp_path / "worker"),
            ],
            stdout=(tmp_path / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
            env=worker_venv.env,
            start_new_session=True,
            cwd=tmp_path,
        ),
    ]
    server = LabrunServer(
        tmp_path / "server",
        python=full.python,
        options=[f"--LabRun.dask_scheduler={address}"],
        env={"PATH": full.env["PATH"]},
    )
    try:
        server.start(timeout=120)
        wait_for_pool(server, workers=1, timeout=180)
        notebook = write_notebook(
            tmp_path / "hello.ipynb", "print('hello from', name)", parameters="name = 'x'"
        )
        env = {**full.env, **server.env, "PATH": full.env["PATH"], "COLUMNS": "200"}
        output = Venv(full.path, env).run(
            "labrun", "submit", str(notebook), "-p", "name", "gpu-host", "--wait", cwd=tmp_path
        )
        assert "completed" in output, output + (tmp_path / "worker.log").read_text()[-3000:]
        with Client(server.url, server.token) as client:
            (run,) = client.list_runs().runs
            (worker,) = client.workers().workers  # the worker-only install, the pool's only one
            assert run.status == RunStatus.completed and run.worker == worker.id
            log = "".join(entry.text for entry in client.logs(run.id).entries)
        assert "hello from gpu-host" in log
    finally:
        server.stop()
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
