"""An adaptive Dask cluster grows with labrun's queue and gives idle workers back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import LocalCluster
from support.pool import labrun_cli, wait_finished
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import RunStatus

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def adaptive_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster with no worker at all until there is work, and at most two."""
    with LocalCluster(
        n_workers=0,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        local_directory=str(tmp_path / "dask"),
        scheduler_kwargs={"host": "127.0.0.1"},
    ) as cluster:
        cluster.adapt(minimum=0, maximum=2, interval="500ms", wait_count=4)
        yield cluster


def test_queued_jobs_start_workers_and_idle_workers_are_given_back(
    adaptive_cluster: LocalCluster, tmp_path: Path, notebooks: Path
) -> None:
    server = LabrunServer(
        tmp_path / "server",
        options=[
            f"--LabRun.dask_scheduler={adaptive_cluster.scheduler_address}",
            "--LabRun.adaptive_backlog=2",
        ],
    )
    server.start()
    try:
        with Client(server.url, server.token) as client:
            wait_for(lambda: client.pool().state == "ready", what="the pool")
            assert client.pool().workers == []
            ids = [
                json.loads(
                    labrun_cli(
                        server, "submit", str(notebooks / "params.ipynb"), "-p", "x", str(x),
                        "--json",
                    ).stdout
                )["id"]
                for x in range(3)
            ]  # fmt: skip
            for run_id in ids:
                assert wait_finished(client, run_id, timeout=120).status == RunStatus.completed
            workers = {client.get_run(run_id).worker for run_id in ids}
            assert workers and None not in workers
            # The queue is empty: the adaptive cluster gives its workers back.
            wait_for(lambda: not client.pool().workers, timeout=60, what="workers to retire")
    finally:
        server.stop()
