"""A worker in the pool but out of the server's reach (a partial partition): it keeps its
jobs while it reaches the scheduler (executor/fencing.py), so the scheduler of record stops
a job there, through the scheduler, before it runs the job again.

The worker reaches the server only through a proxy that the test cuts (the server's
``public_url``); the scheduler stays in reach of everyone.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from support.notebooks import write_notebook
from support.pool import start_scheduler, start_worker, stop_processes, wait_for_pool
from support.proxy import cuttable_proxy
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import RunStatus, SubmitJob

pytestmark = pytest.mark.timeout(240)


def test_a_job_on_a_worker_out_of_the_servers_reach_is_stopped_before_it_runs_again(
    tmp_path: Path,
) -> None:
    address, scheduler = start_scheduler(tmp_path)
    worker = start_worker(address, "far", tmp_path)
    server = LabrunServer(
        tmp_path / "server",
        options=[f"--LabRun.dask_scheduler={address}", "--LabRun.worker_timeout=9"],
    )
    notebook = write_notebook(
        tmp_path / "slow.ipynb",
        "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(seconds)",
        parameters="seconds = 120",
    )
    try:
        with cuttable_proxy(server.url) as (proxy, cut):
            # The workers reach the server at its public URL: through the proxy
            server.options.append(f"--LabRun.public_url={proxy}")
            server.start()
            wait_for_pool(server, workers=1)
            with Client(server.url, server.token) as client:
                content = json.loads(notebook.read_text())
                job = SubmitJob(notebook=notebook.name, content=content)
                run_id = client.submit_job(job).id

                def kernel_pid() -> int | None:
                    for entry in client.logs(run_id).entries:
                        if entry.text.startswith("pid "):
                            return int(entry.text.split()[1])
                    return None

                pid = wait_for(kernel_pid, 120, "the job's kernel to start")

                # When the worker can no longer reach the server, but reaches the scheduler
                cut.set()

                # Then the server counts it silent and runs the job again, and first stops
                # the attempt that runs there, through the scheduler
                def lost() -> bool:
                    transitions = client.transitions(run_id).transitions
                    return any(t.status == RunStatus.lost for t in transitions)

                wait_for(lost, 120, "the job to be lost")
                wait_for(
                    lambda: not psutil.pid_exists(pid), 30, f"attempt 1's kernel {pid} to stop"
                )
                message = next(
                    t.message
                    for t in client.transitions(run_id).transitions
                    if t.status == RunStatus.lost
                )
                assert message is not None and "stopped sending heartbeats" in message
            cut.clear()
    finally:
        server.stop()
        stop_processes([worker, scheduler])
