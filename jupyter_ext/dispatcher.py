"""The dispatcher: feeds queued notebook jobs to the Dask pool, in order, and follows them.

Jobs are rows first (``queued``), so nothing is lost when the server stops. One server of a
store dispatches: the scheduler of record (``leadership.py``); the others pass it what they
queue and cancel (``dispatch.*`` events, ``relay.py``). It keeps an index of the queued jobs
in memory and, whenever a job is submitted or one ends (and once a second regardless), hands
out the pool's free capacity as the scheduling policy (``scheduling.py``: queue priority, fair
share, per-user GPU limits, job priority) chooses. A server that takes over rebuilds that
index from the store, and the jobs in flight from the store and the Dask scheduler: tasks are
submitted "fire and forget", so they outlive the server that submitted them.

Each dispatched attempt is counted in the store and may be claimed by a worker once. A job
whose worker leaves (or stops sending heartbeats) is ``lost`` and queued again until
``max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from labrun.executor import worker_id as address_id
from labrun.messages import JobSpec, RunError
from labrun.models import RunStatus

from . import scheduling
from .dask_pool import DaskPool, DispatcherSettings
from .grants import Admissions, is_grant
from .inflight import Inflight, InflightJobs, count_usage, in_flight
from .leadership import Leadership
from .orphans import settle_orphan_cells
from .retiring import TokenRetirement
from .scheduling import USAGE_WINDOW, Backlog, QueuedJob, QueueRule
from .stopping import give_up_on, stop_on_pool
from .store.leases import Hold, LeaseLost
from .sweep_settling import SweepSettling

if TYPE_CHECKING:
    from distributed import Client

    from .store import Store

logger = logging.getLogger("labrun.dispatcher")

# Seconds a job's worker must be missing before the job is lost; see also executor/fencing.py.
LOST_GRACE = 3.0
# How often the scheduler of record reads the queued jobs from the store again, for any a
# dispatch.queued event did not bring.
RECONCILE_EVERY = 10.0
# How often the dispatcher looks for %%mlrun cells whose kernel went away unrecorded.
ORPHAN_CHECK_EVERY = 5.0
# Seconds a stop may spend closing the pool gracefully; its processes are killed after.
# The server must exit within 10 s of a SIGTERM, on a starved CPU too.
STOP_TIMEOUT = 5.0


class Dispatcher:
    """Owns the pool (``dask_pool.DaskPool``), the backlog and the jobs in flight."""

    # The task a dispatched job runs as: the notebook runner. The dispatch benchmark swaps
    # in a no-op to measure the dispatcher alone.
    job_function: Callable[[dict[str, Any]], Any] | None = None

    def __init__(
        self,
        store: Store,
        settings: DispatcherSettings,
        *,
        publish: Callable[..., None],
        call: Callable[..., Any],
        server: str,
        user: str = "",
        lease_seconds: float = 3.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.publish = publish
        # Runs a store function on the database's threads: `await self.call(fn, *args)`.
        self.call = call
        self.pool = DaskPool(settings)
        self.inflight = InflightJobs()
        self.backlog = Backlog()
        self.grants = Admissions(self)
        self.queues: dict[str, QueueRule] = {}
        self.usage: dict[str, float] = {}
        self.dispatched = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._usage_at = 0.0
        self._reconciled_at = time.monotonic()
        self._lost_seen: dict[int, float] = {}
        self._orphans_at = 0.0
        self.retiring = TokenRetirement(store, call)
        self.sweeps = SweepSettling(store, call, publish, self.add)
        self.leadership = Leadership(
            store,
            call,
            server=server,
            user=user,
            seconds=lease_seconds,
            gained=self._lead,
            lost=self._step_down,
        )
        self._serving: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self.state == "disabled":  # no pool: jobs wait in the scheduler of record's backlog
            self.pool.disabled()
            self.leadership.url = self.settings.server_url
            self._task = asyncio.create_task(self.leadership.run())
            return
        self._task = asyncio.create_task(self._run())

    @property
    def state(self) -> str:
        return self.pool.state

    @property
    def client(self) -> Client | None:
        return self.pool.client

    async def use_token(self, grant: dict[str, Any]) -> None:
        await self.pool.use_token(grant)

    async def check_gpus(self, gpus: int) -> None:
        await self.pool.check_gpus(gpus)

    @property
    def leading(self) -> bool:
        """Whether this server is the scheduler of record (dispatches for the store)."""
        return self.leadership.leading

    async def _run(self) -> None:
        if await self.pool.open():
            self.leadership.url = self.settings.server_url
            self.leadership.scheduler = self.pool.scheduler_address or ""
            await self.leadership.run()

    async def _lead(self, hold: Hold) -> None:
        """This server became the scheduler of record: rebuild from the store and the
        scheduler, tell the workers where to report, and dispatch."""
        await self._step_down()
        await self.pool.publish_server(self.settings.server_url)
        self.inflight = InflightJobs(await in_flight(self.pool, self.store, self.call))
        await self._load_backlog()
        await self.grants.load()
        self._usage_at = 0.0
        self._serving = asyncio.create_task(self.serve())
        self.publish("pool.updated", {"dispatcher": self.leadership.server})

    async def _step_down(self) -> None:
        """Stop dispatching: what is in flight goes on (its tasks outlive this server's
        hold on them) and is followed by whoever takes over."""
        if self._serving is not None:
            self._serving.cancel()
            await asyncio.wait([self._serving], timeout=1.0)
            self._serving = None
        entries, self.inflight = list(self.inflight.values()), InflightJobs()
        for entry in entries:
            if entry.task is not None:
                entry.task.cancel()
        self.backlog = Backlog()
        self._lost_seen.clear()

    async def serve(self) -> None:
        """Dispatch rounds: when woken (a job submitted or ended), else once a second."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except LeaseLost as err:
                # The next look at the lease steps down (or takes it anew, rebuilding).
                logger.warning("labrun: %s", err.message)
                self.leadership.look_now()
                return
            except Exception:
                logger.exception("labrun: dispatcher tick failed")
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
                # Gather what else arrives in the next moment into the same round: one
                # store transaction for many jobs instead of one each (not when a cell waits).
                if not self.grants.asked:
                    await asyncio.sleep(self.settings.batch_window)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop dispatching and let go of the pool, in ``timeout`` seconds at most.

        Queued and running jobs stay rows in the store; the next start takes them up. A
        local pool is closed, and what of it is still running after the time is killed.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        if self._task is not None:
            # Also a pool still starting: what started of it is closed below.
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
        await self._step_down()
        await self.leadership.release()
        self.publish("dispatch.released", {"server": self.leadership.server}, internal=True)
        await self.retiring.wait(1.0)
        await self.sweeps.wait(1.0)
        await self.pool.close(deadline)

    @property
    def queued_ids(self) -> set[int]:
        """The ids of the queued jobs waiting in the backlog (the scheduler of record's)."""
        return self.backlog.ids

    def wake(self) -> None:
        self._wake.set()

    async def _load_backlog(self) -> None:
        for job in await self.call(self.store.dispatch.queued):
            self._push(job)

    def _push(self, job: QueuedJob) -> None:
        if job.id not in self.inflight:
            self.backlog.push(job)

    def add(self, jobs: list[QueuedJob]) -> None:
        """Jobs just submitted: queue them and dispatch at once where the pool has room
        (here, or by the scheduler of record, told by an event)."""
        if not self.leading and self._task is not None:  # (not started: it keeps them)
            self.publish("dispatch.queued", {"ids": [job.id for job in jobs]}, internal=True)
            return
        for job in jobs:
            self._push(job)
        self.wake()

    async def on_event(self, type: str, data: dict[str, Any]) -> None:
        """What another server of the store asks of the scheduler of record."""
        if type.startswith("dispatch.grant"):
            await self.grants.on_event(type, data)
        elif type == "dispatch.released":
            self.leadership.look_now()
        elif not self.leading:
            return
        elif type == "dispatch.queued":
            self.add(await self.call(self.store.dispatch.queued_among, data["ids"]))
        elif type == "dispatch.cancelled":
            await self.cancel(data["ids"])
        elif type == "run.updated" and data.get("id") in self.inflight:
            self.wake()  # a job reported its end through another server

    # --- one round ------------------------------------------------------------------

    async def tick(self) -> None:
        if await self.pool.refresh_workers():
            await self._check_lost()
        if time.monotonic() - self._usage_at > 10:
            self.usage = await self.call(self.store.dispatch.usage, USAGE_WINDOW)
            self.queues = await self.call(self.store.dispatch.queue_rules)
            self._usage_at = time.monotonic()
        if time.monotonic() - self._reconciled_at > RECONCILE_EVERY:
            # Whatever another server queued and its event did not say (one lost on the
            # way, or sent before this server took over) is found here.
            await self._load_backlog()
            self._reconciled_at = time.monotonic()
        chosen = await self.grants.admit(self.choose(), self.leadership.hold)
        if chosen:
            await self._submit(chosen)
        if self.client is not None and time.monotonic() - self._orphans_at > ORPHAN_CHECK_EVERY:
            self._orphans_at = time.monotonic()
            await settle_orphan_cells(self.client, self.store, self.call, self.publish)
        await self.grants.release_stale()

    def choose(self) -> list[QueuedJob]:
        """The jobs to start now, in order, within the pool's free capacity, as the policy
        chooses them; each has its slot reserved here until it is submitted."""
        # (Holding the GPUs of %%mlrun cells and sessions too: grants.py adds them.)
        running = self.inflight.running
        free = scheduling.capacity(
            ((w.nthreads, w.gpus) for w in self.pool.workers.values()),
            running,
            adaptive_backlog=self.settings.adaptive_backlog,
        )
        chosen = scheduling.choose(
            self.backlog,
            free,
            running=running,
            usage=self.usage,
            rules=self.queues,
            max_gpus_per_user=self.settings.max_gpus_per_user,
        )
        for job in chosen:
            # Reserve a job's slot now; the attempt number comes from the store below.
            if not is_grant(job.id):
                self.inflight[job.id] = Inflight(job=job, attempt=0)
        return chosen

    async def _submit(self, jobs: list[QueuedJob]) -> None:
        from distributed import fire_and_forget

        from labrun.executor.runner import run_notebook_job
        from labrun.executor.tasks import run_cell_job

        assert self.client is not None
        functions = {"notebook": self.job_function or run_notebook_job, "cell": run_cell_job}
        try:
            specs: list[JobSpec] = await self.call(
                self.store.dispatch.next_attempts,
                [j.id for j in jobs],
                self.settings.job_token_lifetime,
                self.leadership.hold,
            )
        except LeaseLost:
            for job in jobs:
                self.inflight.pop(job.id, None)
            raise
        by_id = {spec.run_id: spec for spec in specs}
        # One graph update per (kind, GPUs, priority) group of the round, not one per job.
        groups: dict[tuple[str, int, int], list[QueuedJob]] = {}
        for job in jobs:
            entry = self.inflight[job.id]
            spec = by_id.get(job.id)
            if spec is None:  # cancelled meanwhile
                del self.inflight[job.id]
                continue
            entry.attempt = spec.attempt
            entry.token_id = spec.token_id
            priority = self.queues.get(job.queue, QueueRule()).priority
            groups.setdefault((spec.kind, job.gpus, priority), []).append(job)
        for (kind, gpus, priority), group in groups.items():
            futures = self.client.map(
                functions[kind],
                # A plain dict, JSON-shaped as the REST API's: the task validates it as a
                # JobSpec, so a worker of another labrun version says what it cannot take.
                [by_id[job.id].model_dump(mode="json") for job in group],
                key=[f"labrun-run-{job.id}-{self.inflight[job.id].attempt}" for job in group],
                resources={"GPU": gpus} if gpus else None,
                priority=priority,
                pure=False,
            )
            # Kept by the scheduler until they end, whoever holds them: a job outlives the
            # server that dispatched it.
            fire_and_forget(futures)
            for job, future in zip(group, futures, strict=True):
                entry = self.inflight[job.id]
                entry.future = future
                entry.task = asyncio.create_task(self._follow(job.id, entry))
                self.dispatched += 1

    async def _follow(self, run_id: int, entry: Inflight) -> None:
        """Wait for a job's task and settle what the worker could not report itself."""
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        assert entry.future is not None
        outcome: str | None = None
        try:
            result = await entry.future
            outcome = result.get("status") if isinstance(result, dict) else None
            logger.debug("labrun: run %d ended: %s", run_id, result)
        except asyncio.CancelledError:
            if self.inflight.get(run_id) is entry:
                raise
            outcome = "superseded"  # we cancelled it (lost, or the run was cancelled)
        except FutureCancelledError as err:
            if self.inflight.get(run_id) is not entry:
                outcome = "superseded"
            else:
                # Not our cancel: the scheduler dropped the task, typically because the
                # connection to it was lost (a pool stopping or restarting). The job did
                # not fail; whether it ran is unknown, so it is lost and queued again.
                await self._lose(run_id, entry, f"the pool dropped its task ({err.reason})")
                outcome = "lost"
        except KilledWorker as err:
            await self._lose(run_id, entry, f"its workers kept dying: {err}")
            outcome = "lost"
        except Exception as err:  # noqa: BLE001 - any task error fails the run with its text
            message = f"the job's task failed on the pool: {type(err).__name__}: {err}"
            error = RunError(type=type(err).__name__, message=message)
            if await self.call(self.store.dispatch.fail, run_id, error):
                self._changed(run_id)
            outcome = "failed"
        finally:
            if self.inflight.get(run_id) is entry:
                del self.inflight[run_id]
                self.wake()
        self.retiring.add(entry.token_id)
        if outcome not in ("superseded", "lost"):
            count_usage(self.usage, entry, self._usage_at)  # fair share sees it at once
        if outcome not in (None, "superseded", "lost"):
            self.sweeps.add(run_id)

    # --- claims, cancels, losses ----------------------------------------------------

    def claimed(self, run_id: int, worker: str, parent_id: int | None) -> None:
        entry = self.inflight.get(run_id)
        if entry is not None:
            entry.worker = worker
            entry.started = time.monotonic()
        if parent_id is not None:
            self.sweeps.add(run_id)  # a sweep's run: settled with the others started meanwhile

    async def cancel(self, run_ids: Collection[int]) -> None:
        """Stop the jobs the store just marked cancelled (one run, or a sweep's unfinished
        runs): drop the queued ones from the backlog in one pass, stop the others. A
        server that does not dispatch stops what runs and tells the one that does."""
        if not self.leading:
            self.publish("dispatch.cancelled", {"ids": list(run_ids)}, internal=True)
        dropped = self.backlog.discard(run_ids)
        for run_id in run_ids:
            if run_id not in dropped:
                await self._stop(run_id)

    async def _stop(self, run_id: int) -> None:
        """Stop a cancelled run that is not queued here: on its worker, or wherever it is."""
        entry = self.inflight.get(run_id)
        await stop_on_pool(
            self.pool,
            self.store,
            self.call,
            run_id,
            worker=entry.worker if entry is not None else None,
            future=entry.future if entry is not None else None,
        )

    async def _check_lost(self) -> None:
        """Lose the jobs whose worker left the cluster or stopped sending heartbeats.

        Covers the jobs this dispatcher follows and those it does not (marked running
        before a restart, or by another server). A worker must stay missing for
        ``LOST_GRACE`` seconds, so one that joined since the last look is not mistaken.
        """
        alive = {address_id(address) for address in self.pool.workers}
        heartbeats = await self.call(self.store.pool.list_workers)
        silent = {w.id for w in heartbeats.workers if not w.alive}
        holders: dict[int, tuple[str, Inflight | None]] = {
            run_id: (entry.worker, entry)
            for run_id, entry in self.inflight.items()
            if entry.worker is not None
        }
        running = await self.call(self.store.dispatch.running)
        attempts = {job.id: job.attempt for job in running}
        for job in running:
            entry = self.inflight.get(job.id)
            if entry is not None and entry.worker is None:
                entry.worker = job.worker  # claimed through another server
            if job.id not in self.inflight and job.worker is not None:
                holders[job.id] = (job.worker, None)
        # A job taken over from an earlier scheduler of record ended when the store says so.
        if any(entry.adopted for entry in self.inflight.values()):
            still = {job.id for job in await self.call(self.store.dispatch.in_flight)}
            for run_id, entry in list(self.inflight.items()):
                if entry.adopted and run_id not in still:
                    del self.inflight[run_id]
                    self.wake()
        now = time.monotonic()
        for run_id in set(self._lost_seen) - set(holders):
            del self._lost_seen[run_id]
        for run_id, (worker, entry) in holders.items():
            if worker in alive and worker not in silent:
                self._lost_seen.pop(run_id, None)
                continue
            if now - self._lost_seen.setdefault(run_id, now) < LOST_GRACE:
                continue
            del self._lost_seen[run_id]
            why = "stopped sending heartbeats" if worker in alive else "left the pool"
            if worker in alive:  # out of reach of the servers only: stop it there first
                attempt = entry.attempt if entry is not None else attempts.get(run_id, 0)
                await give_up_on(self.pool, run_id, attempt, worker)
            await self._lose(run_id, entry, f"its worker {worker} {why}")

    async def _lose(self, run_id: int, entry: Inflight | None, reason: str) -> None:
        if entry is not None and self.inflight.get(run_id) is entry:
            del self.inflight[run_id]
            if entry.future is not None and not entry.future.done() and self.client is not None:
                await self.client.cancel([entry.future], force=True)
        if entry is not None:
            self.retiring.add(entry.token_id)
        status = await self.call(
            self.store.dispatch.lose,
            run_id,
            reason,
            max_attempts=self.settings.max_attempts,
            hold=self.leadership.hold,
        )
        logger.warning("labrun: run %d lost (%s); now %s", run_id, reason, status)
        if status == RunStatus.queued:
            for job in await self.call(self.store.dispatch.queued, run_id):
                self._push(job)
        self._changed(run_id)
        self.sweeps.add(run_id)
        self.wake()

    def _changed(self, run_id: int) -> None:
        self.publish("run.updated", {"id": run_id})
