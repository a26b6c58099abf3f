"""Starting and describing the pool's Dask cluster.

On one machine the server starts a local cluster: one worker per GPU, pinned to it
(``CUDA_VISIBLE_DEVICES``) and advertising ``resources={"GPU": 1}``; with no GPU, CPU workers
that take ``--gpus 0`` jobs. A team points the server at its own scheduler instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from distributed import Nanny, Scheduler, SpecCluster

from .nvml import WORKER_GPUS, open_gpus

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
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard_address": None, "port": 0},
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
