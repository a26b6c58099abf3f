"""Stopping a cancelled run on the pool, from any server of the store.

A job runs on the worker that claimed it (the store says which); a ``%%mlrun`` cell is a
kernel's task that any worker may hold. Any server can stop either: it needs the pool's
client and the store, not the dispatcher's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client, Future

    from .dask_pool import DaskPool
    from .store import Store

logger = logging.getLogger("labrun.dispatcher")

# Seconds the scheduler of record gives a worker to stop an attempt it is about to run again.
GIVE_UP_WAIT = 5.0


async def stop_on_pool(
    pool: DaskPool,
    store: Store,
    call: Callable[..., Awaitable[Any]],
    run_id: int,
    *,
    worker: str | None = None,
    future: Future[Any] | None = None,
) -> None:
    """Stop ``run_id`` where it runs. ``worker`` and ``future``: what this server's
    dispatcher knows of it, if it dispatched it."""
    from labrun.executor.tasks import stop_run

    client = pool.client
    if client is None:
        return
    is_job = True
    if worker is None:
        is_job, worker = await call(store.dispatch.placement, run_id)
    if not is_job:
        try:
            key = await call(store.runs.cell_key, run_id)
            await client.run(stop_run, run_id, key=key, on_error="ignore")
            await _cancel_cell_task(client, key)
        except Exception as err:  # noqa: BLE001 - the pool may be going away
            logger.warning("labrun: could not stop run %d: %s", run_id, err)
        return
    address = None
    if worker is not None:
        await pool.refresh_workers(force=True)
        address = pool.address_of(worker)
    if address is not None:
        try:
            await client.run(stop_run, run_id, workers=[address], on_error="ignore")
        except Exception as err:  # noqa: BLE001 - the worker may be going away
            logger.warning("labrun: could not stop run %d on %s: %s", run_id, address, err)
    elif future is not None:
        # Not claimed yet (its claim is refused now that it is cancelled), or its worker
        # is gone: the task goes, whoever holds it ("fire and forget" does too).
        await client.cancel([future], force=True)


async def _cancel_cell_task(client: Client, key: str | None) -> None:
    """Drop a kernel's cell task from the scheduler (it is the kernel's, not ours).

    A cell stuck in native code ignores the interrupt, and its worker process is
    restarted; the scheduler would then run the task again on another worker for the
    kernel that still waits on it.
    """
    from distributed import Future

    if key is None:
        return
    task: Future[Any] = Future(f"labrun-cell-{key}", client)
    await client.cancel([task], force=True, reason="labrun: the run was cancelled")


async def give_up_on(pool: DaskPool, run_id: int, attempt: int, worker: str) -> None:
    """Stop attempt ``attempt`` of the job ``run_id`` on ``worker``, which is in the pool
    but out of this server's reach (no heartbeats): the job is about to run again, and the
    worker keeps its jobs while it reaches the scheduler (``executor/fencing.py``). Through
    the scheduler, within GIVE_UP_WAIT seconds: a worker cut off from it too stops the job
    itself."""
    from labrun.executor.tasks import abandon_run

    client = pool.client
    if client is None:
        return
    await pool.refresh_workers(force=True)
    address = pool.address_of(worker)
    if address is None:
        return
    reason = "the server runs this job again: this worker could not reach it"
    try:
        await asyncio.wait_for(
            client.run(abandon_run, run_id, attempt, reason, workers=[address], on_error="ignore"),
            GIVE_UP_WAIT,
        )
    except Exception as err:  # noqa: BLE001 - the worker may be cut off from the pool too
        logger.warning("labrun: could not stop run %d on %s: %s", run_id, address, err)
