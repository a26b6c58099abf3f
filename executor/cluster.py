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
from dataclasses import dataclass, field
from typing import Any

import psutil
from distributed import Nanny, SpecCluster
from distributed.core import Status
from distributed.deploy.subprocess import SubprocessScheduler

from .nvml import WORKER_GPUS, open_gpus

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
    *, cpu_workers: int | None, local_directory: str, threads_per_worker: int = 1
) -> dict[str, dict[str, Any]]:
    """The workers of a local pool: one per GPU found (pinned), else CPU workers."""
    gpus = open_gpus()
    devices = gpus.devices() if gpus is not None else []
    if gpus is not None:
        gpus.close()
    base = {"local_directory": local_directory, "host": "127.0.0.1", "dashboard_address": None}
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


async def start_local_cluster(
    *, cpu_workers: int | None, local_directory: str, threads_per_worker: int = 1
) -> SpecCluster:
    """A local Dask cluster of worker processes (each restarted by its nanny if it dies)."""
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
            }
        },
    }
    cluster = SpecCluster(
        workers=local_worker_specs(
            cpu_workers=cpu_workers,
            local_directory=local_directory,
            threads_per_worker=threads_per_worker,
        ),
        scheduler=scheduler,
        asynchronous=True,
        name="labrun-local",
    )
    await cluster
    return cluster


async def close_cluster(cluster: SpecCluster, timeout: float = 10.0) -> None:
    """Close a cluster this process started, even when its scheduler died first.

    The scheduler's process shares the server's process group, so a terminal's Ctrl-C or
    a SIGTERM to the group ends it before the server shuts down. ``SpecCluster.close``
    then fails on the dead scheduler and leaves the nannies restarting their workers, so
    the server would not exit; close the nannies directly instead.
    """
    if _scheduler_alive(cluster):
        try:
            await asyncio.wait_for(cluster.close(), timeout)  # type: ignore[arg-type]
            return
        except Exception as err:  # noqa: BLE001 - any failure falls back to closing by hand
            logger.info("labrun: the pool did not close cleanly (%s); stopping it", err)
    # Their workers cannot close gracefully without a scheduler: a short wait, then kill.
    nannies = [w for w in cluster.workers.values() if isinstance(w, Nanny)]
    await asyncio.gather(
        *(n.close(timeout=2, reason="labrun-shutdown") for n in nannies),
        return_exceptions=True,
    )
    scheduler = cluster.scheduler
    if scheduler is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(scheduler.close(), timeout)
    # Else distributed's exit hook closes it again, synchronously on a stopped event
    # loop, and the process hangs at exit.
    cluster.status = Status.closed


def _scheduler_alive(cluster: SpecCluster) -> bool:
    scheduler = cluster.scheduler
    if not isinstance(scheduler, SubprocessScheduler):
        return True
    process = scheduler.process
    if process is None or process.returncode is not None:
        return False
    # Dead but not yet reaped by the event loop's child watcher: a zombie.
    try:
        return psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
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
