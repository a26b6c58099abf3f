"""A team's own scheduler and a `labrun worker` with two GPUs (fake NVML here).

Device assignment and telemetry run against ``FakeNvml`` (``LABRUN_FAKE_GPUS=2``): the same
interface as the real NVML, which these tests do not reach.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.notebooks import write_notebook
from support.pool import (
    labrun_cli,
    start_scheduler,
    start_worker,
    stop_processes,
    wait_finished,
    wait_for_pool,
)
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.models import RunStatus

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def gpu_pool(tmp_path: Path) -> Iterator[LabrunServer]:
    """A Dask scheduler, one `labrun worker` offering two (fake) GPUs, and a server."""
    address, scheduler = start_scheduler(tmp_path)
    worker = start_worker(address, "gpu-host", tmp_path, {"LABRUN_FAKE_GPUS": "2"})
    server = LabrunServer(tmp_path / "server", options=[f"--LabRun.dask_scheduler={address}"])
    server.start()
    try:
        wait_for_pool(server, workers=1)
        yield server
    finally:
        server.stop()
        stop_processes([worker, scheduler])


def test_jobs_get_their_own_devices_and_telemetry_names_the_holder(
    gpu_pool: LabrunServer, tmp_path: Path
) -> None:
    notebook = write_notebook(
        tmp_path / "gpu.ipynb",
        "import os, time\nprint('devices', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\n"
        "time.sleep(seconds)",
        parameters="seconds = 4",
    )
    with Client(gpu_pool.url, gpu_pool.token) as client:
        worker = client.pool().workers[0]
        assert worker.resources == {"GPU": 2.0} and worker.nthreads == 2

        ids = [
            json.loads(
                labrun_cli(gpu_pool, "submit", str(notebook), "--gpus", "1", "--json").stdout
            )["id"]
            for _ in range(2)
        ]
        # Both run at once, each on its own device.
        wait_for(
            lambda: all(client.get_run(i).status == RunStatus.running for i in ids),
            what="both jobs to run",
        )
        devices = [client.get_run(i).devices for i in ids]
        assert sorted(d[0] for d in devices if d) == [0, 1]

        # The GPU view attributes each device to the run (and user) holding it.
        def attributed() -> bool:
            gpus = client.gpus().gpus
            return {g.run_id for g in gpus} == set(ids) and all(g.user for g in gpus)

        wait_for(attributed, timeout=15, what="telemetry naming the holders")
        assert {g.name for g in client.gpus().gpus} == {"Fake NVML GPU"}

        for run_id, device in zip(ids, devices, strict=True):
            run = wait_finished(client, run_id)
            assert run.status == RunStatus.completed
            log = "".join(e.text for e in client.logs(run_id).entries)
            assert f"devices {device[0]}" in log  # type: ignore[index]
            history = client.request("GET", "/gpus/history", params={"run_id": run_id}).json()[
                "samples"
            ]
            assert history and {s["gpu_index"] for s in history} == {device[0]}  # type: ignore[index]
            # Its record names the device it held, as NVML knows it, with the driver
            (held,) = client.get_run(run_id).environment["gpus"]
            assert held == {
                "index": device[0],  # type: ignore[index]
                "name": "Fake NVML GPU",
                "uuid": f"GPU-fake-{device[0]:04d}",  # type: ignore[index]
                "memory_total": 16 * 1024**3,
                "driver": "fake",
            }

        # A two-GPU job gets both devices; three is more than any worker has.
        both = labrun_cli(
            gpu_pool, "submit", str(notebook), "--gpus", "2", "-p", "seconds", "0", "--wait"
        )
        assert both.returncode == 0, both.stdout + both.stderr
        assert "devices 0,1" in both.stdout
        last = client.list_runs(sort="-id", limit=1).runs[0]
        assert [g["index"] for g in client.get_run(last.id).environment["gpus"]] == [0, 1]
        three = labrun_cli(gpu_pool, "submit", str(notebook), "--gpus", "3")
        assert three.returncode == 1
        assert "no worker offers 3 GPUs (the most is 2)" in three.stderr
        assert "(2 GPU, 2 threads)" in three.stderr

        pool = labrun_cli(gpu_pool, "pool")
        assert "Fake NVML GPU" in pool.stdout and "idle" in pool.stdout
