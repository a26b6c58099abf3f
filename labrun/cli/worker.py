"""``labrun worker``: a pool worker on a GPU host, for a team's own Dask scheduler."""

from __future__ import annotations

import asyncio
import os
import socket

import click

from .output import console

# Why a Dask worker closes when its link to the scheduler broke (a network cut, the host of
# the scheduler going down): `labrun worker` then starts another that waits for the scheduler and
# joins again, where `dask worker` would exit. A scheduler that retires or removes the worker,
# or stops cleanly, closes it with another reason, and the command ends.
LINK_BROKEN = "worker-handle-scheduler-connection-broken"


@click.command()
@click.argument("scheduler")
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    help="GPUs to offer: 'auto' (every GPU NVML finds) or a number.",
)
@click.option(
    "--nthreads",
    type=click.IntRange(min=1),
    help="Jobs at once (default: one per GPU, or 1 on a CPU-only host).",
)
@click.option("--name", help="Worker name (default: host name).")
@click.option(
    "--local-directory",
    type=click.Path(file_okay=False),
    help="Scratch space (default: the system's temp folder).",
)
def worker(
    scheduler: str,
    gpus: str,
    nthreads: int | None,
    name: str | None,
    local_directory: str | None,
) -> None:
    """Start a pool worker connected to SCHEDULER (tcp://host:8786, or tls://host:8786
    with Dask's TLS settings: README, "Trust model").

    The worker advertises resources={"GPU": N}; the labrun server, connected to the same
    scheduler, installs the labrun plugin on it (telemetry, device assignment, warm
    kernels). Stop it with Ctrl-C: its running jobs are re-queued elsewhere. When its
    connection to the scheduler breaks, it joins again once the scheduler answers.
    """
    from distributed import Nanny

    class RejoiningNanny(Nanny):
        """Remembers the first reason it was told to close for good."""

        reason: str | None = None

        def close_gracefully(self, reason: str = "nanny-close-gracefully") -> None:
            self.reason = self.reason or reason
            super().close_gracefully(reason=reason)

    from labrun.executor.nvml import open_gpus, owned_indices
    from labrun.executor.security import pool_security

    # Before anything starts: a tcp:// address where the config requires TLS, or a
    # certificate missing, is said in one line.
    security = pool_security("worker", address=scheduler)

    if gpus == "auto":
        found = open_gpus()
        count = len(owned_indices(found))
        if found is not None:
            found.close()
    else:
        try:
            count = int(gpus)
        except ValueError:
            raise click.BadParameter("use 'auto' or a number", param_hint="--gpus") from None
    threads = nthreads or max(1, count)
    resources = {"GPU": float(count)} if count else {}
    label = name or socket.gethostname()
    console.print(
        f"labrun worker {label}: {count} GPU{'s' * (count != 1)}, {threads} thread"
        f"{'s' * (threads != 1)}, scheduler {scheduler}"
    )

    async def run() -> None:
        while True:
            async with RejoiningNanny(
                scheduler,
                nthreads=threads,
                resources=resources,
                name=label,
                local_directory=local_directory or os.environ.get("TMPDIR"),
                security=security,
            ) as nanny:
                await nanny.finished()
            if nanny.reason != LINK_BROKEN:
                return
            console.print(f"labrun worker {label}: lost the scheduler; joining it again")

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        console.print("labrun worker stopped.")
