"""Notebook jobs, side by side on one machine: papermill alone, papermill on Dask, labrun.

    python benchmarks/jobs.py                 # everything, about four minutes on 2 cores
    python benchmarks/jobs.py --json docs/jobs-results.json

The notebook is trivial (a parameters cell, a print, an expression), so what is measured is
the cost of running *a* notebook, not the notebook's work.

(a) papermill: ``papermill.execute_notebook`` in this process, one run at a time (each
    starts its own kernel, as papermill does), and 20 runs in sequence.
(b) papermill on a plain Dask ``LocalCluster`` of 2 worker processes: 20 runs by
    ``client.map``.
(c) labrun: a real ``labrun server`` with its local pool of 2 workers: one job's
    submit-to-completed latency (the ``POST /jobs`` that ``labrun submit`` makes, then
    polling the run), the median of 10 on an idle pool and of 10 back to back; and a 20-job sweep (``POST /sweeps``, as
    ``labrun sweep``) from submission until every run completed; also ``labrun sweep
    --wait`` as a user types it, process start included. All of it twice: with warm kernels
    forked from a zygote (the default), and launched as new processes
    (``LABRUN_FORK_KERNELS=0``), to show what the zygote takes off.
(d) The dispatcher alone: 10,000 queued jobs in SQLite dispatched to a Dask cluster by
    the real dispatcher with a no-op job, reporting the time spent inside its rounds
    (choosing, counting attempts in the store, submitting) per job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import papermill
from distributed import Client as DaskClient
from distributed import LocalCluster
from support.notebooks import write_notebook
from support.pool import wait_for_pool
from support.server import LabrunServer

from labrun.client import Client
from labrun.jupyter_ext.dask_pool import DispatcherSettings
from labrun.jupyter_ext.dispatcher import Dispatcher
from labrun.jupyter_ext.store import Database, Store, check_schema
from labrun.models import RunStatus, SubmitJob, SubmitSweep


def papermill_once(notebook: str, out: str, x: int) -> float:
    start = time.perf_counter()
    papermill.execute_notebook(
        notebook, out, parameters={"x": x}, kernel_name="python3", progress_bar=False
    )
    return time.perf_counter() - start


def papermill_runs(notebook: Path, workdir: Path, jobs: int) -> dict[str, float]:
    out = str(workdir / "out.ipynb")
    singles = [papermill_once(str(notebook), out, i) for i in range(5)]
    start = time.perf_counter()
    for i in range(jobs):
        papermill_once(str(notebook), out, i)
    sequential = time.perf_counter() - start
    return {"single_median": statistics.median(singles), "sequential": sequential}


def papermill_on_dask(notebook: Path, workdir: Path, jobs: int) -> float:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            local_directory=str(workdir / "dask"),
        ) as cluster,
        DaskClient(cluster) as client,
    ):
        # One run per worker first: imports and caches, as a long-lived cluster has them.
        client.gather(
            client.map(
                papermill_once,
                [str(notebook)] * 2,
                [str(workdir / f"warm-{i}.ipynb") for i in range(2)],
                range(2),
                pure=False,
            )
        )
        start = time.perf_counter()
        futures = client.map(
            papermill_once,
            [str(notebook)] * jobs,
            [str(workdir / f"dask-{i}.ipynb") for i in range(jobs)],
            range(jobs),
            pure=False,
        )
        client.gather(futures)
        return time.perf_counter() - start


def wait_completed(client: Client, run_ids: list[int], interval: float = 0.01) -> None:
    pending = set(run_ids)
    while pending:
        for run_id in list(pending):
            run = client.get_run(run_id)
            if run.status.finished:
                if run.status != RunStatus.completed:
                    raise RuntimeError(f"run {run_id} {run.status.value}: {run.error}")
                pending.discard(run_id)
        if pending:
            time.sleep(interval)


def wait_sweep(client: Client, sweep_id: int, interval: float = 0.1) -> None:
    """One request per poll for the whole sweep, so the poll costs the pool nothing."""
    while True:
        sweep = client.sweep(sweep_id)
        if all(run.status.finished for run in sweep.runs):
            bad = [r.id for r in sweep.runs if r.status != RunStatus.completed]
            if bad:
                raise RuntimeError(f"runs {bad} did not complete")
            return
        time.sleep(interval)


def labrun_runs(notebook: Path, workdir: Path, jobs: int, fork: bool = True) -> dict[str, Any]:
    """labrun's figures; ``fork=False``: warm kernels launched as new processes, as before
    the zygote (``LABRUN_FORK_KERNELS=0``, which the pool's workers inherit)."""
    server = LabrunServer(
        workdir / ("labrun" if fork else "labrun-launched"),
        pool=True,
        options=["--LabRun.local_workers=2"],
        env={"LABRUN_FORK_KERNELS": "1" if fork else "0"},
    )
    server.start()
    try:
        wait_for_pool(server, workers=2)
        content = json.loads(notebook.read_text())
        with Client(server.url, server.token) as client:

            def submit(x: int) -> float:
                start = time.perf_counter()
                run = client.submit_job(
                    SubmitJob(notebook=notebook.name, content=content, parameters={"x": x})
                )
                wait_completed(client, [run.id], interval=0.005)
                return time.perf_counter() - start

            for x in range(4):  # warm: each worker's first job loads nbconvert and friends
                submit(x)
            # One job on an idle pool: a pause lets the used kernel's replacement start.
            latencies = []
            for x in range(10):
                time.sleep(1.5)
                latencies.append(submit(x))
            back_to_back = [submit(x) for x in range(10)]
            time.sleep(2)  # let the pools refill

            start = time.perf_counter()
            sweep = client.submit_sweep(
                SubmitSweep(notebook=notebook.name, content=content, grid={"x": list(range(jobs))})
            )
            wait_sweep(client, sweep.sweep.id)
            sweep_seconds = time.perf_counter() - start
            time.sleep(2)

            start = time.perf_counter()
            values = ",".join(str(i) for i in range(jobs))
            cli = subprocess.run(
                [sys.executable, "-m", "labrun.cli", "sweep", str(notebook), "-g", "x", values],
                env={**server.env, "COLUMNS": "120"},
                capture_output=True,
                text=True,
                check=True,
            )
            sweep_id = int(cli.stdout.split("Queued sweep ")[1].split(" ")[0].strip("[]bold/"))
            wait_sweep(client, sweep_id)
            cli_seconds = time.perf_counter() - start
    finally:
        server.stop()
    return {
        "latency_median": statistics.median(latencies),
        "latency_min": min(latencies),
        "latencies": latencies,
        "back_to_back_median": statistics.median(back_to_back),
        "sweep": sweep_seconds,
        "sweep_cli": cli_seconds,
    }


def noop_job(spec: dict[str, Any]) -> int:
    return int(spec["run_id"])


def dispatch_overhead(notebook: Path, workdir: Path, count: int) -> dict[str, float]:
    url = f"sqlite:///{workdir / 'dispatch.db'}"
    db = Database(url)
    check_schema(db.engine, auto_upgrade=True)
    store = Store(db, artifact_root=str(workdir / "artifacts"))
    content = json.loads(notebook.read_text())
    start = time.perf_counter()
    store.sweeps.submit(
        SubmitSweep(notebook=notebook.name, content=content, grid={"x": list(range(count))}),
        "bench",
    )
    queued_seconds = time.perf_counter() - start

    # The scheduler and its worker in their own processes, as in a team's pool, so the
    # dispatcher's event loop does only the dispatcher's work.
    with LocalCluster(
        n_workers=1,
        threads_per_worker=256,
        processes=True,
        dashboard_address=None,
        local_directory=str(workdir / "dask"),
        scheduler_kwargs={"host": "127.0.0.1"},
    ) as cluster:
        address = cluster.scheduler_address
        result = asyncio.run(_dispatch_all(store, db, address, count))
    db.close()
    return {
        **result,
        "jobs": count,
        "queue_seconds": queued_seconds,
        "per_job_ms": 1000 * result["in_ticks"] / count,
        "per_job_total_ms": 1000 * result["total"] / count,
    }


async def _dispatch_all(store: Store, db: Database, address: str, count: int) -> dict[str, float]:
    dispatcher = Dispatcher(
        store,
        DispatcherSettings(scheduler=address, start_local=False),
        publish=lambda *_: None,
        call=db.run,
    )
    dispatcher.job_function = noop_job
    await dispatcher._load_backlog()
    # Connected by hand: no labrun plugin (no kernels) for a no-op job.
    dispatcher.pool.client = await DaskClient(address, asynchronous=True)
    dispatcher.pool.state = "ready"
    timing = {"in_ticks": 0.0, "ticks": 0}
    tick = dispatcher.tick

    async def timed_tick() -> None:
        t0 = time.perf_counter()
        await tick()
        timing["in_ticks"] += time.perf_counter() - t0
        timing["ticks"] += 1

    dispatcher.tick = timed_tick  # type: ignore[method-assign]
    start = time.perf_counter()
    serving = asyncio.create_task(dispatcher.serve())
    while dispatcher.dispatched < count or dispatcher.inflight:
        await asyncio.sleep(0.01)
    total = time.perf_counter() - start
    serving.cancel()
    await dispatcher.stop()
    return {**timing, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--dispatch", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="Write the figures here.")
    parser.add_argument(
        "--only", choices=["papermill", "labrun", "dispatch"], help="Run one part only."
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="labrun-bench-jobs-"))
    notebook = write_notebook(
        workdir / "trivial.ipynb", "print('x is', x)", "x * 2", parameters="x = 1"
    )

    if args.only in (None, "papermill"):
        pm = papermill_runs(notebook, workdir, args.jobs)
        print(f"papermill, one run (median of 5):      {pm['single_median']:.3f} s")
        print(f"papermill, {args.jobs} runs in sequence:        {pm['sequential']:.2f} s")
        on_dask = papermill_on_dask(notebook, workdir, args.jobs)
        print(f"papermill on 2 Dask workers, {args.jobs} runs:   {on_dask:.2f} s")
    if args.only in (None, "labrun"):
        lr = labrun_runs(notebook, workdir, args.jobs)
        launched = labrun_runs(notebook, workdir, args.jobs, fork=False)
        for label, figures in (("forked", lr), ("launched", launched)):
            print(f"labrun, kernels {label}:")
            print(f"  one job submit->completed (median of 10): {figures['latency_median']:.3f} s")
            print(f"  jobs back to back (median of 10): {figures['back_to_back_median']:.3f} s")
            print(f"  {args.jobs}-job sweep (API):              {figures['sweep']:.2f} s")
            print(
                f"  sweep CLI, {args.jobs} jobs, process start incl.: {figures['sweep_cli']:.2f} s"
            )
    if args.only in (None, "dispatch"):
        dispatch = dispatch_overhead(notebook, workdir, args.dispatch)
        print(
            f"dispatcher: {dispatch['jobs']} queued jobs, {dispatch['per_job_ms']:.3f} ms per "
            f"job in its rounds, {dispatch['per_job_total_ms']:.3f} ms per job with Dask's work"
        )
    if args.only is not None:
        return
    ratios = {
        "latency_vs_papermill_single": lr["latency_median"] / pm["single_median"],
        "sweep_speedup_vs_sequential": pm["sequential"] / lr["sweep"],
        "sweep_cli_speedup_vs_sequential": pm["sequential"] / lr["sweep_cli"],
        "dask_papermill_speedup_vs_sequential": pm["sequential"] / on_dask,
        "launched_sweep_speedup_vs_sequential": pm["sequential"] / launched["sweep"],
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "papermill": pm,
                    "papermill_on_dask": on_dask,
                    "labrun": lr,
                    "labrun_kernels_launched": launched,
                    "dispatch": dispatch,
                    "ratios": ratios,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
