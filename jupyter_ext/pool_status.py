"""The pool's state as ``GET pool`` shows it: workers, their GPUs and runs, the queue, and
the server that dispatches. Any server of the store answers it, from the store and the
scheduler; the scheduler of record counts its own backlog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labrun.executor import worker_id as address_id
from labrun.models import Dispatching, PoolStatus, PoolWorker

if TYPE_CHECKING:
    from .dispatcher import Dispatcher


async def pool_status(dispatcher: Dispatcher) -> PoolStatus:
    await dispatcher.pool.refresh_workers()
    stored = {w.id: w for w in (await dispatcher.call(dispatcher.store.pool.list_workers)).workers}
    gpus = (await dispatcher.call(dispatcher.store.pool.gpus)).gpus
    running = await dispatcher.call(dispatcher.store.runs.summaries_by_worker)
    workers = []
    for address, info in sorted(dispatcher.pool.workers.items()):
        wid = address_id(address)
        workers.append(
            PoolWorker(
                id=wid,
                address=address,
                host=info.host,
                nthreads=info.nthreads,
                resources=info.resources,
                gpus=[g for g in gpus if g.worker_id == wid],
                runs=running.get(wid, []),
                alive=wid in stored and stored[wid].alive,
            )
        )
    if dispatcher.leading:
        queued, in_flight = len(dispatcher.queued_ids), len(dispatcher.inflight)
    else:
        queued, in_flight = await dispatcher.call(dispatcher.store.dispatch.counts)
    lease = await dispatcher.leadership.info()
    return PoolStatus(
        state=dispatcher.pool.state,
        scheduler=dispatcher.pool.scheduler_address,
        message=dispatcher.pool.message,
        workers=workers,
        queued=queued,
        running=in_flight,
        dispatcher=Dispatching(
            server=lease.holder,
            user=lease.user,
            url=lease.url,
            since=lease.acquired,
            this_server=lease.holder == dispatcher.leadership.server,
        )
        if lease.held
        else None,
    )
