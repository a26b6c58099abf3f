"""Tokens on a real pool: the workers' token renewed before it expires (those that join
later too), a job's kernel holding its own run's token, and PATCH to cancelled stopping a
running job."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client as DaskClient
from support.notebooks import write_notebook
from support.pool import labrun_cli, wait_for_pool
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import DescribeToken, RunStatus, UpdateRun

# Short, so the first token expires while the test watches; long enough for a busy machine.
POOL_TOKEN_LIFETIME = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabrunServer]:
    server = LabrunServer(
        tmp_path_factory.mktemp("tokens-server"),
        pool=True,
        options=[f"--LabRun.pool_token_lifetime={POOL_TOKEN_LIFETIME}"],
    )
    server.start()
    wait_for_pool(server, workers=2)
    yield server
    server.stop()


def pool_tokens(client: Client) -> list[DescribeToken]:
    """The pool's tokens, oldest first."""
    return sorted(
        (t for t in client.tokens(all=True).tokens if t.scope == "pool"),
        key=lambda t: t.created_at,
    )


def test_workers_outlive_the_pools_first_token(server: LabrunServer) -> None:
    with Client(server.url, server.token) as client:
        first = pool_tokens(client)[0]

        # When the token the workers started with has expired
        wait_for(
            lambda: pool_tokens(client)[0].status == "expired",
            timeout=120,
            what="the pool's first token to expire",
        )

        # Then both workers still report, with the token the server issued since
        def reporting_since(moment: float) -> set[str]:
            return {
                w.id
                for w in client.workers().workers
                if w.alive and w.last_heartbeat.timestamp() > moment
            }

        wait_for(
            lambda: len(reporting_since(first.expires_at.timestamp())) == 2,
            timeout=30,
            what="both workers to report after the first token expired",
        )
        assert len(pool_tokens(client)) >= 3  # renewed at half its life, again and again

        # And a worker that joins now (a killed one, restarted) starts with a valid one,
        # though the plugin it is given still carries the first
        before = reporting_since(first.expires_at.timestamp())
        with DaskClient(client.pool().scheduler, timeout=10) as dask:
            victim = min(dask.scheduler_info(n_workers=-1)["workers"])
            pid = dask.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: reporting_since(first.expires_at.timestamp()) - before,
            timeout=90,
            what="the restarted worker to report",
        )


def test_a_jobs_kernel_holds_its_runs_token_and_records_through_it(
    server: LabrunServer, tmp_path: Path
) -> None:
    # A job that reads its token's claims, logs a metric and sends a %%mlrun cell
    notebook = write_notebook(
        tmp_path / "inside.ipynb",
        "import base64, json, os\n"
        "import labrun\n"
        "payload = os.environ['LABRUN_TOKEN'].split('.')[1]\n"
        "claims = json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))\n"
        "print('token scope', claims['s'], claims.get('r'))\n"
        "labrun.log({'loss': 0.5})",
        "%load_ext labrun",
        "%%mlrun --name inner-cell\nanswer = 6 * 7",
        "print('back', answer)",
    )
    result = labrun_cli(server, "submit", str(notebook), "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    with Client(server.url, server.token) as client:
        run = client.list_runs(q="inside", kind="notebook").runs[0]
        assert run.status == RunStatus.completed
        log = "".join(e.text for e in client.logs(run.id).entries)

        # Its kernel had its own run's token, not the pool's
        assert f"token scope run {run.id}" in log
        # labrun.log and the %%mlrun cell recorded through it; the cell under the job
        assert client.get_run(run.id).metrics == {"loss": 0.5}
        (cell,) = client.list_runs(q="inner-cell").runs
        assert cell.parent_id == run.id and cell.user == run.user
        assert cell.status == RunStatus.completed and "back 42" in log

        # And once the job ended, its token was revoked
        def job_token() -> DescribeToken:
            (token,) = [t for t in client.tokens(all=True).tokens if t.run_id == run.id]
            return token

        assert job_token().scope == "run"
        wait_for(lambda: job_token().status == "revoked", what="the job's token to be revoked")


def test_patch_to_cancelled_stops_a_running_job(server: LabrunServer, tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "slow.ipynb",
        "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('finished')",
    )
    with Client(server.url, server.token) as client:
        run_id = json.loads(labrun_cli(server, "submit", str(notebook), "--json").stdout)["id"]
        wait_for(
            lambda: "started" in "".join(e.text for e in client.logs(run_id).entries),
            what="the slow notebook to start",
        )

        # When its status is set to cancelled (as a script or the sidebar might)
        client.update_run(run_id, UpdateRun(status=RunStatus.cancelled))

        # Then its kernel is stopped, as `labrun cancel` stops it
        wait_for(
            lambda: all(not w.runs for w in client.pool().workers) and client.pool().running == 0,
            timeout=30,
            what="the worker to let go of the cancelled job",
        )
        assert "finished" not in "".join(e.text for e in client.logs(run_id).entries)
        assert client.get_run(run_id).status == RunStatus.cancelled
