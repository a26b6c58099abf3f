"""Notebook jobs and sweeps: submit, follow, re-run; the pool's state; workers' claims."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from labrun import environment
from labrun.models import (
    ClaimRun,
    CodeState,
    DescribeRun,
    DescribeSweep,
    PoolStatus,
    RerunRun,
    RunSummary,
    SubmitJob,
    SubmitSweep,
)

from ..pool_status import pool_status
from ..scheduling import QueuedJob
from .base import LabrunHandler, operation


def _queued(run: RunSummary, priority: int) -> QueuedJob:
    return QueuedJob(
        id=run.id,
        user=run.user,
        queue=run.queue or "default",
        gpus=run.requested_gpus,
        priority=priority,
        attempt=run.attempt,
    )


class JobSubmitHandler(LabrunHandler):
    """Base of the routes that queue a notebook: its code state, read here if need be."""

    async def code_state(self, notebook: str, content: dict[str, Any]) -> CodeState:
        """The git state and local modules of ``notebook``, read on this server: for a
        submission that did not bring them, as the sidebar's does (its path is relative to
        the server's root dir, where the notebook's folder is)."""
        root = Path(self.serverapp.root_dir).expanduser().resolve()
        try:
            path = (root / notebook).resolve()
            found = path.is_relative_to(root) and path.is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL in it
            found = False
        if not found:
            return CodeState(
                capture_error=f"the notebook {notebook!r} is not a file under the server's "
                "root dir, and the submission did not say its git state, so none is recorded"
            )
        # git runs in a subprocess: tens of milliseconds, off the event loop.
        captured = await asyncio.to_thread(environment.code_state, path, content)
        return CodeState.model_validate(captured)


class JobsHandler(JobSubmitHandler):
    @operation(
        "Submit a notebook job: papermill runs it on the pool with these parameters",
        body=SubmitJob,
        response=DescribeRun,
        status=201,
        errors=(400, 403, 404, 503),
        action="job.submit",
        target="run",
    )
    async def post(self, body: SubmitJob) -> DescribeRun:
        # Everything is checked before the row exists: a bad request queues nothing.
        await self.app.dispatcher.check_gpus(body.gpus)
        if body.environment is None:
            code = await self.code_state(body.notebook, body.content)
            body = body.model_copy(update={"environment": code})
        run = await self.call(self.store.jobs.submit, body, self.username)
        self.app.dispatcher.add([_queued(run, body.priority)])
        self.events.publish("run.created", run)
        return run


class SweepsHandler(JobSubmitHandler):
    @operation(
        "Submit a sweep: one job per combination of the grid's values (or a random sample)",
        body=SubmitSweep,
        response=DescribeSweep,
        status=201,
        errors=(400, 403, 404, 503),
        action="sweep.submit",
        target="run",
    )
    async def post(self, body: SubmitSweep) -> DescribeSweep:
        await self.app.dispatcher.check_gpus(body.gpus)
        if body.environment is None:
            code = await self.code_state(body.notebook, body.content)
            body = body.model_copy(update={"environment": code})
        report = body.report
        if report is not None and report.environment is None:
            code = await self.code_state(report.notebook, report.content)
            body.report = report.model_copy(update={"environment": code})
        sweep = await self.call(self.store.sweeps.submit, body, self.username)
        self.audit_target_id = str(sweep.sweep.id)
        self.app.dispatcher.add([_queued(run, body.priority) for run in sweep.runs])
        self.events.publish("run.created", sweep.sweep)
        return sweep


class SweepHandler(LabrunHandler):
    @operation("A sweep with its runs and their counts by status", response=DescribeSweep)
    async def get(self, run_id: int) -> DescribeSweep:
        return await self.call(self.store.sweeps.get, run_id)


class RunRerunHandler(LabrunHandler):
    @operation(
        "Queue a notebook job or a %%mlrun cell again: same notebook (or cell and inputs), "
        "parameters, resources and datasets; its worker compares its packages with the "
        "original's record before it runs, and `strict` refuses to run on a difference",
        body=RerunRun,
        body_required=False,
        response=DescribeRun,
        status=201,
        errors=(400, 403, 404, 503),
        action="run.rerun",
    )
    async def post(self, run_id: int, body: RerunRun) -> DescribeRun:
        original = await self.call(self.store.runs.get, run_id)
        await self.app.dispatcher.check_gpus(original.requested_gpus)
        run = await self.call(self.store.jobs.rerun, run_id, self.username, strict=body.strict)
        self.audit_detail["rerun"] = run.id
        # As the store queued it: with the original's job priority.
        self.app.dispatcher.add(await self.call(self.store.dispatch.queued, run.id))
        self.events.publish("run.created", run)
        return run


class RunClaimHandler(LabrunHandler):
    @operation(
        "A worker starts a dispatched run (each dispatched attempt is granted once)",
        body=ClaimRun,
        response=DescribeRun,
        errors=(400, 403, 404, 409),
        access="pool",
        action="run.claim",
    )
    async def post(self, run_id: int, body: ClaimRun) -> DescribeRun:
        run = await self.call(
            self.store.dispatch.claim, run_id, body, max_attempts=self.app.max_attempts
        )
        self.app.dispatcher.claimed(run_id, body.worker, run.parent_id)
        self.events.publish("run.updated", run)
        return run


class PoolHandler(LabrunHandler):
    @operation(
        "The pool: its scheduler, every worker with its GPUs and the runs it runs",
        response=PoolStatus,
    )
    async def get(self) -> PoolStatus:
        return await pool_status(self.app.dispatcher)
