"""A %%mlrun cell is recorded even when its kernel ends right after it: under nbclient, inside
a notebook job, and when the kernel is gone before it could say how the cell ended."""

from __future__ import annotations

import uuid
from pathlib import Path

import nbclient
import pytest
from distributed import Client as DaskClient
from support.kernel import Kernel
from support.notebooks import make_notebook, write_notebook
from support.pool import labrun_cli, wait_finished
from support.server import LabrunServer
from support.waiting import wait_for

from labrun.client import Client
from labrun.delivery import Outbox
from labrun.messages import CellPayload
from labrun.models import CreateRun, DescribeRun, RunKind, RunStatus


@pytest.fixture
def client(pool_server: LabrunServer) -> Client:
    return Client(pool_server.url, pool_server.token)


def cell_run(client: Client, name: str) -> DescribeRun | None:
    runs = client.list_runs(q=name, kind="cell").runs
    return client.get_run(runs[0].id) if runs else None


def settled(client: Client, name: str) -> DescribeRun:
    def ended() -> DescribeRun | None:
        run = cell_run(client, name)
        return run if run is not None and run.status.finished else None

    return wait_for(ended, 60, f"the run of cell {name} to end")  # type: ignore[return-value]


def log_text(client: Client, run_id: int) -> str:
    return "".join(entry.text for entry in client.logs(run_id).entries)


def test_the_last_cell_of_a_notebook_run_by_nbclient_is_recorded(
    pool_server: LabrunServer, client: Client, tmp_path: Path
) -> None:
    # Given a notebook whose last cell is %%mlrun, executed top to bottom by nbclient (as
    # nbconvert and papermill do), whose kernel shuts down right after that cell
    name = f"last-{uuid.uuid4().hex[:6]}"
    nb = make_notebook("%load_ext labrun", f"%%mlrun --name {name}\nx = 40 + 2\nprint('x is', x)")
    spool = tmp_path / "kernel-spool"
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute(
        cwd=str(tmp_path), env={**pool_server.env, "LABRUN_SPOOL_DIR": str(spool)}
    )

    # Then the cell's run is completed, with its output, and the kernel left nothing behind
    # to be delivered later
    run = settled(client, name)
    assert run.status == RunStatus.completed
    assert "x is 42" in log_text(client, run.id)
    assert not list(spool.glob("*.jsonl"))


def test_a_cell_is_recorded_when_its_kernel_shuts_down_right_after_it(
    pool_server: LabrunServer, client: Client, tmp_path: Path
) -> None:
    # Given a kernel that runs a %%mlrun cell with a large input (whose record, the input
    # included, takes a while to send) and is shut down, gracefully, the moment the cell's
    # reply arrives: before its record has left in the background
    name = f"then-exit-{uuid.uuid4().hex[:6]}"
    spool = tmp_path / "kernel-spool"
    kernel = Kernel(tmp_path, {**pool_server.env, "LABRUN_SPOOL_DIR": str(spool)})
    try:
        kernel.ok("%load_ext labrun\nimport numpy as np\nbig = np.ones(2_500_000)")
        kernel.ok(f"%%mlrun --name {name}\nprint('sum', int(big.sum()))")
    finally:
        kernel.client.stop_channels()
        kernel.manager.shutdown_kernel(now=False)

    # When the next labrun process on this machine starts (should the kernel have left
    # part of its record in its spool)
    next_process = Outbox(client, spool_dir=spool)
    try:
        # Then the run is completed, with its output and its input
        run = settled(client, name)
        assert run.status == RunStatus.completed
        assert "sum 2500000" in log_text(client, run.id)
        inputs = {a.name: a.size for a in client.artifacts(run.id).artifacts}
        assert inputs.get("inputs.pkl", 0) > 20_000_000
        assert next_process.flush(60)
        assert not list(spool.glob("*.jsonl"))
    finally:
        next_process.close()


def test_a_cell_in_a_notebook_job_is_recorded(
    pool_server: LabrunServer, client: Client, tmp_path: Path
) -> None:
    # Given a notebook job whose last cell sends a cell of its own to the pool
    name = f"job-cell-{uuid.uuid4().hex[:6]}"
    notebook = write_notebook(
        tmp_path / "uses_mlrun.ipynb",
        "%load_ext labrun",
        f"%%mlrun --name {name} --gpus 0\ny = 6 * 7\nprint('y is', y)",
    )

    # When it runs to the end through `labrun submit`
    result = labrun_cli(pool_server, "submit", str(notebook), "--wait")
    assert result.returncode == 0, result.stderr

    # Then the cell's run is completed too
    run = settled(client, name)
    assert run.status == RunStatus.completed
    assert "y is 42" in log_text(client, run.id)


def test_the_server_settles_a_cell_whose_kernel_went_away(
    pool_server: LabrunServer, client: Client
) -> None:
    from labrun.executor.tasks import run_cell

    # Given a "kernel" (a Dask client of the pool) that creates a cell's run and runs the
    # cell, as %%mlrun does
    scheduler = client.pool().scheduler
    assert scheduler is not None
    key = uuid.uuid4().hex
    with DaskClient(scheduler, set_as_default=False, timeout="30s") as kernel:
        run = client.create_run(
            CreateRun(
                key=key,
                name=f"orphan-{key[:6]}",
                kind=RunKind.cell,
                status=RunStatus.queued,
                source="print('ran on the pool')",
                environment={"pool_client": kernel.id},
            )
        )
        payload = CellPayload(
            token=key,
            key=key,
            topic=f"labrun-cell-{uuid.uuid4().hex}",
            source="print('ran on the pool')",
        )
        future = kernel.submit(run_cell, payload, {}, pure=False, key=f"labrun-cell-{key}")
        outcome = future.result(timeout=120)
        # The worker handed the kernel the cell's record: the kernel would record it now.
        assert outcome["record"]["status"] == "completed"
        del future
    # When the kernel goes away without recording it
    assert client.get_run(run.id).status == RunStatus.queued

    # Then the server records how the cell ended, from what its worker kept
    ended = wait_finished(client, run.id, timeout=120)
    assert ended.status == RunStatus.completed
    assert ended.worker is not None and ended.started_at is not None
    assert "ran on the pool" in log_text(client, run.id)
