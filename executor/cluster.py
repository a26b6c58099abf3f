"""Starting and describing the pool's Dask cluster.

On one machine the server starts a local cluster: one worker per GPU, pinned to it
(``CUDA_VISIBLE_DEVICES``) and advertising ``resources={"GPU": 1}``; with no GPU, CPU workers
that take ``--gpus 0`` jobs. A team points the server at its own scheduler instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from distributed import Nanny, SpecCluster
from distributed.core import Status
from distributed.deploy.subprocess import SubprocessScheduler
from distributed.security import Security

from .nvml import WORKER_GPUS, open_gpus
from .security import local_protocol

logger = logging.getLogger("labrun.pool")

# CPU workers a local pool starts where there is no GPU, unless configured.
DEFAULT_CPU_WORKERS = 2


@dataclass
class PoolWorkerInfo:
    """One Dask worker as the dispatcher sees it."""

    address: str
    name: str
    host: str
    nthreads: int
    gpus: int
    resources: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.address} ({self.gpus} GPU, {self.nthreads} thread{'s' * (self.nthreads > 1)})"
        )


def local_worker_specs(
    *,
    cpu_workers: int | None,
    local_directory: str,
    security: Security,
    threads_per_worker: int = 1,
) -> dict[str, dict[str, Any]]:
    """The workers of a local pool: one per GPU found (pinned), else CPU workers."""
    gpus = open_gpus()
    devices = gpus.devices() if gpus is not None else []
    if gpus is not None:
        gpus.close()
    base = {
        "local_directory": local_directory,
        "host": "127.0.0.1",
        "dashboard_address": None,
        # The nanny and its worker: each listens on the scheduler's protocol.
        "security": security,
    }
    if devices:
        return {
            f"gpu-{d.index}": {
                "cls": Nanny,
                "options": {
                    **base,
                    "nthreads": 1,
                    "resources": {"GPU": 1},
                    "env": {"CUDA_VISIBLE_DEVICES": str(d.index), WORKER_GPUS: str(d.index)},
                    "name": f"gpu-{d.index}",
                },
            }
            for d in devices
        }
    count = cpu_workers or min(DEFAULT_CPU_WORKERS, os.cpu_count() or 1)
    return {
        f"cpu-{i}": {
            "cls": Nanny,
            "options": {**base, "nthreads": threads_per_worker, "name": f"cpu-{i}"},
        }
        for i in range(count)
    }


def local_cluster(
    *,
    cpu_workers: int | None,
    local_directory: str,
    security: Security,
    threads_per_worker: int = 1,
) -> tuple[SpecCluster, dict[str, dict[str, Any]]]:
    """A local Dask cluster of worker processes (each restarted by its nanny if it dies),
    holding its first worker only, and the specs of the others.

    Not started yet: ``await`` it, on the event loop it was made on. The caller holds it
    before it starts, so a stop that comes during the start can close what started. Once
    it is up, :func:`add_workers` starts the others: a worker starting alone starts in
    about half the time on a small machine, and one worker is enough for the first cell.

    Where ``security`` requires encryption (Dask's config says so) the pool speaks TLS
    only, as a team's pool would: its scheduler listens on tls://, and every kernel that
    connects to it needs the same certificates.
    """
    os.makedirs(local_directory, exist_ok=True)
    # The scheduler gets a process of its own: in the server's, every REST request would
    # hold up scheduling (a %%mlrun cell's round trip is about ten milliseconds).
    scheduler = {
        "cls": SubprocessScheduler,
        "options": {
            "scheduler_kwargs": {
                "host": "127.0.0.1",
                # Any free port: a fixed 8787 would clash with a dashboard the user runs.
                "dashboard_address": "127.0.0.1:0",
                "port": 0,
                # Its Security is Dask's default, read from the same config in its own
                # process: an object does not pass through the JSON it is started with.
                "protocol": local_protocol(security),
            }
        },
    }
    specs = local_worker_specs(
        cpu_workers=cpu_workers,
        local_directory=local_directory,
        security=security,
        threads_per_worker=threads_per_worker,
    )
    first = next(iter(specs))
    cluster = SpecCluster(
        workers={first: specs.pop(first)},
        scheduler=scheduler,
        asynchronous=True,
        security=security,
        name="labrun-local",
    )
    return cluster, specs


async def add_workers(cluster: SpecCluster, specs: dict[str, dict[str, Any]]) -> None:
    """Start the workers of ``specs`` in a running ``cluster``; they get its plugins."""
    cluster.worker_spec.update(specs)
    await cluster  # a SpecCluster starts what its worker_spec lists and does not run yet


async def close_cluster(cluster: SpecCluster, timeout: float = 4.0) -> None:
    """Close a cluster this process started within ``timeout`` seconds, whatever its state.

    A stop may find the pool's processes already hit by the same signal (a terminal's
    Ctrl-C or a SIGTERM to the process group reaches the scheduler and the workers too),
    and the CPU starved. So: nannies no longer restart their workers (a new one would
    wait for a dead scheduler), each nanny stops its worker (the worker's jobs and kernels
    with it) while the time lasts, then every process of the pool still there, recorded
    before the close (the workers' kernel zygotes and kernels included), is killed.

    Not ``SpecCluster.close``: it first retires every worker through the scheduler, to
    move their data (a labrun worker keeps none), and on a starved CPU or with the
    scheduler gone that round trip alone can outlast the whole stop.
    """
    nannies = _nannies(cluster)
    for nanny in nannies:
        if nanny.status not in (Status.closing, Status.closed):
            nanny.close_gracefully(reason="labrun-shutdown")
    processes = pool_processes(cluster)
    try:
        await asyncio.wait_for(_close_processes(cluster, nannies, timeout), timeout)
    except Exception as err:  # noqa: BLE001 - any failure, the timeout included, ends in kill
        logger.warning("labrun: the pool did not close in time (%r); killing its processes", err)
    finally:
        # Else distributed's exit hook closes it again, synchronously on a stopped event
        # loop, and the process hangs at exit.
        cluster.status = Status.closed
        await kill_processes([*processes, *pool_processes(cluster)])


async def _close_processes(cluster: SpecCluster, nannies: list[Nanny], timeout: float) -> None:
    # A nanny kills its worker once 80% of its timeout passed without the worker closing.
    await asyncio.gather(
        *(n.close(timeout=max(timeout - 0.5, 0.5), reason="labrun-shutdown") for n in nannies),
        return_exceptions=True,
    )
    if cluster.scheduler is not None:
        # A subprocess scheduler is killed; it has nothing to save.
        await cluster.scheduler.close()
    if cluster.scheduler_comm is not None:
        await cluster.scheduler_comm.close_rpc()


def _nannies(cluster: SpecCluster) -> list[Nanny]:
    """The cluster's nannies, those still starting included (a stop during the start):
    ``SpecCluster`` lists a worker in ``workers`` only once it started."""
    workers = {*cluster.workers.values(), *getattr(cluster, "_created", ())}
    return [w for w in workers if isinstance(w, Nanny)]


def pool_processes(cluster: SpecCluster) -> list[psutil.Process]:
    """The processes of a local pool: its scheduler, its workers and what they started."""
    pids = []
    scheduler = cluster.scheduler
    if isinstance(scheduler, SubprocessScheduler) and scheduler.process is not None:
        pids.append(scheduler.process.pid)
    pids.extend(nanny.pid for nanny in _nannies(cluster) if nanny.pid)
    found = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            found.extend([root, *root.children(recursive=True)])
        except psutil.Error:
            continue  # gone already
    return found


async def kill_processes(processes: list[psutil.Process], wait: float = 2.0) -> None:
    """SIGKILL each of ``processes`` still running and wait, briefly, until they are gone.

    ``psutil.Process`` remembers its start time, so a pid reused since is left alone.
    """
    killed = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if running(process):
                process.kill()
                killed.append(process)
    if killed:
        logger.warning("labrun: killed %d process(es) of the pool", len(killed))
    deadline = time.monotonic() + wait
    while any(running(p) for p in killed) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs: a zombie is dead, waiting for its parent to reap it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def workers_of(identity: dict[str, Any]) -> dict[str, PoolWorkerInfo]:
    """Workers from ``await client.scheduler.identity(n_workers=-1)``."""
    out = {}
    for address, info in identity.get("workers", {}).items():
        resources = dict(info.get("resources") or {})
        out[address] = PoolWorkerInfo(
            address=address,
            name=str(info.get("name", address)),
            host=str(info.get("host", "")),
            nthreads=int(info.get("nthreads", 1)),
            gpus=int(resources.get("GPU", 0)),
            resources=resources,
        )
    return out
