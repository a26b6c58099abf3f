"""What the pool survives: dead workers, server restarts, dead kernels; and who goes first."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from distributed import Client as DaskClient
from support.notebooks import write_notebook
from support.pool import labrun_cli, wait_finished, wait_for_pool
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.executor.plugins import Kernels
from labrun.executor.tasks import describe_worker
from labrun.jupyter_ext.store import Database, Store
from labrun.models import RunStatus, SubmitJob


def statuses(client: Client, run_id: int) -> list[str]:
    return [t.status.value for t in client.transitions(run_id).transitions]


def test_a_job_whose_worker_dies_is_requeued_and_finishes_elsewhere(
    tmp_path: Path, notebooks: Path
) -> None:
    server = LabrunServer(tmp_path / "server", pool=True)
    server.start()
    try:
        wait_for_pool(server, workers=2)
        result = labrun_cli(
            server, "submit", str(notebooks / "slow.ipynb"), "-p", "seconds", "3", "--json"
        )
        run_id = json.loads(result.stdout)["id"]
        with Client(server.url, server.token) as client:
            wait_for(
                lambda: "started" in "".join(e.text for e in client.logs(run_id).entries),
                what="the job to start",
            )
            first = client.get_run(run_id)
            assert first.status == RunStatus.running and first.attempt == 1
            with DaskClient(client.pool().scheduler, timeout=10) as dask:
                pid = dask.run(os.getpid, workers=[f"tcp://{first.worker}"])
                os.kill(next(iter(pid.values())), signal.SIGKILL)

            run = wait_finished(client, run_id)
            assert run.status == RunStatus.completed
            assert run.attempt == 2
            assert statuses(client, run_id) == [
                "queued",
                "running",
                "lost",
                "queued",
                "running",
                "completed",
            ]
            transitions = client.transitions(run_id).transitions
            assert f"its worker {first.worker}" in (transitions[2].message or "")

            # Each attempt's part of the log apart: the second starts with a marker
            marker = f"--- attempt 2 of 3 on {run.worker} ---\n"
            first_part = "".join(e.text for e in client.logs(run_id, attempt=1).entries)
            second_part = [e.text for e in client.logs(run_id, attempt=2).entries]
            assert "started" in first_part and "finished" not in first_part
            assert "--- attempt" not in first_part
            assert second_part[0] == marker and "finished\n" in second_part
            whole = "".join(e.text for e in client.logs(run_id).entries)
            assert whole.index("started") < whole.index(marker) < whole.index("finished")
        shown = labrun_cli(server, "logs", str(run_id), "--attempt", "2")
        assert shown.returncode == 0 and shown.stdout.startswith(marker), shown.stdout
        assert labrun_cli(server, "logs", str(run_id), "--attempt", "1").stdout == first_part
    finally:
        server.stop()


def test_queued_jobs_survive_a_restart_and_run_once(tmp_path: Path, notebooks: Path) -> None:
    server = LabrunServer(tmp_path / "server", pool=False)
    server.start()
    ids = []
    for x in range(3):
        result = labrun_cli(
            server, "submit", str(notebooks / "params.ipynb"), "-p", "x", str(x), "--json"
        )
        ids.append(json.loads(result.stdout)["id"])
    server.stop()

    server.pool = True
    server.start()
    try:
        with Client(server.url, server.token) as client:
            assert {client.get_run(i).status for i in ids} <= {RunStatus.queued}
            for run_id in ids:
                run = wait_finished(client, run_id)
                assert run.status == RunStatus.completed and run.attempt == 1
                assert statuses(client, run_id) == ["queued", "running", "completed"]
    finally:
        server.stop()


def test_a_job_running_when_the_server_stops_is_not_left_running(
    tmp_path: Path, notebooks: Path
) -> None:
    server = LabrunServer(tmp_path / "server", pool=True)
    server.start()
    result = labrun_cli(
        server, "submit", str(notebooks / "slow.ipynb"), "-p", "seconds", "2", "--json"
    )
    run_id = json.loads(result.stdout)["id"]
    with Client(server.url, server.token) as client:
        wait_for(lambda: client.get_run(run_id).status == RunStatus.running, what="start")
    # The local pool stops with the server, killing the job mid-way.
    server.stop()
    server.start()
    try:
        with Client(server.url, server.token) as client:
            run = wait_finished(client, run_id)
            history = [(t.status.value, t.message) for t in client.transitions(run_id).transitions]
            assert run.status == RunStatus.completed and run.attempt == 2, (run.error, history)
            assert statuses(client, run_id)[:3] == ["queued", "running", "lost"]
    finally:
        server.stop()


def test_fair_share_alternates_between_two_users(tmp_path: Path, notebooks: Path) -> None:
    server = LabrunServer(tmp_path / "server", pool=False, options=["--LabRun.local_workers=1"])
    server.start()  # creates the database
    server.stop()
    # Two users' jobs, alice's all submitted first: first come, first served would run
    # all of hers before any of bob's. Each takes long enough (1.5 s) that a worker's
    # first-job overhead cannot outweigh a whole job in the users' hours.
    store = Store(Database(server.db_url), artifact_root=str(tmp_path / "artifacts"))
    notebook = write_notebook(tmp_path / "steady.ipynb", "import time\ntime.sleep(1.5)")
    content = json.loads(notebook.read_text())
    # The pool's first job also waits for the worker's first kernel, seconds on a busy
    # machine: carol's job, first in line, takes that wait out of alice's and bob's hours.
    store.jobs.submit(SubmitJob(notebook="params.ipynb", content=content, name="warm-up"), "carol")
    for user in ("alice", "bob"):
        for i in range(3):
            store.jobs.submit(
                SubmitJob(notebook="params.ipynb", content=content, name=f"{user}-{i}"), user
            )
    store.db.close()

    server.pool = True
    server.start()
    try:
        with Client(server.url, server.token) as client:
            runs = client.list_runs(kind="notebook").runs
            for run in runs:
                assert wait_finished(client, run.id).status == RunStatus.completed
            started = sorted(
                (client.get_run(r.id) for r in runs), key=lambda r: r.started_at or r.created_at
            )
        order = [r.user for r in started if r.user != "carol"]
        assert order[0] == "alice" and order[1] == "bob", order
        assert sorted(order[:4]) == ["alice", "alice", "bob", "bob"], order
    finally:
        server.stop()


def test_a_warm_kernel_that_died_is_replaced_and_the_job_goes_on(
    pool_server: LabrunServer, notebooks: Path
) -> None:
    def kill_warm_kernels(dask_worker: object) -> int:
        pool = Kernels.of(dask_worker).pool  # type: ignore[arg-type]
        kernels = list(pool._ready.queue)
        for km in kernels:
            os.kill(km.provisioner.process.pid, signal.SIGKILL)
        return len(kernels)

    with Client(pool_server.url, pool_server.token) as client:
        with DaskClient(client.pool().scheduler, timeout=10) as dask:
            wait_for(
                lambda: all(
                    info["warm_kernels"] >= 1
                    for info in dask.run(describe_worker).values()  # type: ignore[arg-type]
                ),
                what="the warm kernels",
            )
            killed = dask.run(kill_warm_kernels)
        assert sum(killed.values()) >= 1
        result = labrun_cli(pool_server, "submit", str(notebooks / "params.ipynb"), "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        run = client.list_runs(sort="-id", limit=1).runs[0]
        assert run.status == RunStatus.completed and run.attempt == 1


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path, notebooks: Path) -> None:
    server = LabrunServer(
        tmp_path / "server",
        options=["--LabRun.dask_scheduler=tcp://127.0.0.1:9", "--LabRun.scheduler_timeout=1"],
    )
    server.start()
    try:
        result = labrun_cli(server, "submit", str(notebooks / "params.ipynb"))
        assert result.returncode == 1
        assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
        assert "c.LabRun.dask_scheduler" in result.stderr
        pool = json.loads(labrun_cli(server, "pool", "--json").stdout)
        assert pool["state"] == "error"
        with Client(server.url, server.token) as client:
            assert client.list_runs().total == 0
    finally:
        server.stop()


pytestmark = pytest.mark.timeout(240)
