"""Notebook jobs and sweeps: submit, follow, re-run; the pool's state; workers' claims."""

from __future__ import annotations

from labrun.models import (
    ClaimRun,
    DescribeRun,
    DescribeSweep,
    PoolStatus,
    RunSummary,
    SubmitJob,
    SubmitSweep,
)

from ..store.jobs import QueuedJob
from .base import LabrunHandler, operation


def _queued(run: RunSummary) -> QueuedJob:
    return QueuedJob(
        id=run.id,
        user=run.user,
        queue=run.queue or "default",
        gpus=run.requested_gpus,
        priority=0,
        attempt=run.attempt,
    )


class JobsHandler(LabrunHandler):
    @operation(
        "Submit a notebook job: papermill runs it on the pool with these parameters",
        body=SubmitJob,
        response=DescribeRun,
        status=201,
        errors=(400, 403, 404, 503),
    )
    async def post(self, body: SubmitJob) -> DescribeRun:
        # Everything is checked before the row exists: a bad request queues nothing.
        await self.app.dispatcher.check_gpus(body.gpus)
        run = await self.call(self.store.jobs.submit, body, self.username)
        self.app.dispatcher.add([_queued(run)])
        self.events.publish("run.created", run)
        return run


class SweepsHandler(LabrunHandler):
    @operation(
        "Submit a sweep: one job per combination of the grid's values (or a random sample)",
        body=SubmitSweep,
        response=DescribeSweep,
        status=201,
        errors=(400, 403, 404, 503),
    )
    async def post(self, body: SubmitSweep) -> DescribeSweep:
        await self.app.dispatcher.check_gpus(body.gpus)
        sweep = await self.call(self.store.jobs.submit_sweep, body, self.username)
        self.app.dispatcher.add([_queued(run) for run in sweep.runs])
        self.events.publish("run.created", sweep.sweep)
        return sweep


class SweepHandler(LabrunHandler):
    @operation("A sweep with its runs and their counts by status", response=DescribeSweep)
    async def get(self, run_id: int) -> DescribeSweep:
        return await self.call(self.store.jobs.sweep, run_id)


class RunRerunHandler(LabrunHandler):
    @operation(
        "Queue a notebook job again: same notebook, parameters, resources and datasets",
        response=DescribeRun,
        status=201,
        errors=(400, 403, 404, 503),
    )
    async def post(self, run_id: int) -> DescribeRun:
        original = await self.call(self.store.runs.get, run_id)
        await self.app.dispatcher.check_gpus(original.requested_gpus)
        run = await self.call(self.store.jobs.rerun, run_id, self.username)
        self.app.dispatcher.add([_queued(run)])
        self.events.publish("run.created", run)
        return run


class RunClaimHandler(LabrunHandler):
    @operation(
        "A worker starts a dispatched run (each dispatched attempt is granted once)",
        body=ClaimRun,
        response=DescribeRun,
        errors=(400, 403, 404, 409),
    )
    async def post(self, run_id: int, body: ClaimRun) -> DescribeRun:
        run = await self.call(
            self.store.jobs.claim, run_id, body, max_attempts=self.app.max_attempts
        )
        self.app.dispatcher.claimed(run_id, body.worker)
        self.events.publish("run.updated", run)
        if run.parent_id is not None:
            await self.call(self.store.jobs.refresh_sweep, run.parent_id)
        return run


class PoolHandler(LabrunHandler):
    @operation(
        "The pool: its scheduler, every worker with its GPUs and the runs it runs",
        response=PoolStatus,
    )
    async def get(self) -> PoolStatus:
        return await self.app.dispatcher.status()
