"""Stopping on a saturated CPU: `labrun server`, `labrun demo` and `jupyter lab` exit 0 and
leave no process behind (scheduler, workers, kernel zygotes, kernels), whether a SIGTERM
reaches the main process only (`kill PID`), a terminal's Ctrl-C the whole process group, or
a SIGTERM every process at once (systemd). Each is stopped while two busy loops hold both
cores, with its pool's kernels started (and, for the server, a job running).

The time each took is printed (``pytest -s``): the product stops within 10 s; the tests
wait far longer, so a slow machine does not fail them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support.lab import JupyterLab
from support.pool import labrun_cli, wait_for_pool
from support.processes import STOPS, cpu_hog, descendants, describe, left_running, stop
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import RunStatus

pytestmark = pytest.mark.timeout(400)


def kernel_processes(pid: int) -> list[psutil.Process]:
    """The kernel zygotes of ``pid``'s workers and the kernels forked from them."""
    found = []
    for process in descendants(pid):
        try:
            if "labrun.executor.forking" in process.cmdline():
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_for_kernels(pid: int) -> None:
    """Until both workers have their zygote and at least one kernel: the whole tree."""
    wait_for(lambda: len(kernel_processes(pid)) >= 4, timeout=120, what="the workers' kernels")


def stop_under_load(
    process: subprocess.Popen[bytes], how: str, log: Path, announced: list[Path]
) -> None:
    """Stop ``process`` the way ``how`` says with the CPU saturated. It must exit 0, every
    process it had started must be gone, and so must the files in Jupyter's runtime folder
    that announce its server (``announced``): clients find servers by them."""
    assert announced and all(path.exists() for path in announced), announced
    tree = descendants(process.pid)
    try:
        with cpu_hog():
            started = time.monotonic()
            code, seconds = stop(process, how)
            left = left_running(tree)
            gone = time.monotonic() - started
    finally:
        left_running(tree, timeout=0)  # kills what a failed stop left, kernels included
    name = " ".join(str(a) for a in process.args[2:4])
    print(f"\n{name}, {how}: exit {code} in {seconds:.1f} s, ", end="")
    print(f"its {len(tree)} processes gone in {gone:.1f} s")
    assert code == 0, log.read_text()[-4000:]
    assert not left, (describe(left), log.read_text()[-4000:])
    assert not [path for path in announced if path.exists()], log.read_text()[-4000:]


def announcement(runtime: Path, pid: int) -> list[Path]:
    return [runtime / f"jpserver-{pid}.json"]


@pytest.mark.parametrize("how", STOPS)
def test_labrun_server_stops_with_its_pool_and_kernels(
    how: str, tmp_path: Path, notebooks: Path
) -> None:
    server = LabrunServer(tmp_path / "server", pool=True)
    server.start()
    try:
        wait_for_pool(server, workers=2)
        # A job runs when the stop comes
        result = labrun_cli(server, "submit", str(notebooks / "slow.ipynb"), "--json")
        run_id = json.loads(result.stdout)["id"]
        with Client(server.url, server.token) as client:
            wait_for(
                lambda: client.get_run(run_id).status == RunStatus.running, what="the job to run"
            )
        assert server.process is not None
        wait_for_kernels(server.process.pid)
        runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
        announced = announcement(runtime, server.process.pid)
        stop_under_load(server.process, how, server.log_path, announced)
    finally:
        server.stop()


# The demo's server runs in a session of its own: a signal to the demo's group is one to
# the demo alone, as a SIGTERM to its process is.
@pytest.mark.parametrize("how", STOPS[:2])
def test_labrun_demo_stops_with_the_server_it_started(how: str, tmp_path: Path) -> None:
    # Its own runtime folder: the demo must start its server, not find another test's.
    env = {
        **os.environ,
        "LABRUN_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labrun.cli",
                "demo",
                "--epochs",
                "1",
                "--workdir",
                str(tmp_path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        # Stopped mid-sweep, its jobs running on the pool of the server it started
        wait_for(lambda: "Sweep " in log.read_text(), timeout=180, what="the demo's sweep")
        wait_for_kernels(demo.pid)
        announced = list((tmp_path / "runtime").glob("jpserver-*.json"))
        stop_under_load(demo, how, log, announced)
        assert "labrun demo stopped" in log.read_text()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


@pytest.mark.parametrize("how", STOPS)
def test_jupyter_lab_stops_with_its_pool_and_kernels(how: str, tmp_path: Path) -> None:
    lab = JupyterLab(tmp_path / "lab")
    lab.start()
    try:
        wait_for(lambda: len(lab.api("GET", "pool")["workers"]) == 2, timeout=120, what="the pool")
        assert lab.process is not None
        wait_for_kernels(lab.process.pid)
        announced = announcement(lab.dir / "runtime", lab.process.pid)
        stop_under_load(lab.process, how, lab.log_path, announced)
    finally:
        lab.stop()
