"""Sweeps: one job per combination of a grid's values, under a run of kind ``sweep`` that
moves with its children and, once they end, may queue a report of them."""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labrun.errors import InvalidRequest, NotFound
from labrun.models import (
    CreateRun,
    DescribeSweep,
    ReportOptions,
    RunKind,
    RunStatus,
    SubmitJob,
    SubmitSweep,
)
from labrun.params import check_notebook, check_parameters, expand_sweep

from .database import Database
from .jobs import JobStore, check_queue, code_record, notebook_stem
from .runs import RunStore
from .tables import Project, Run

# More runs than this in one sweep is almost certainly a typo in a grid.
MAX_SWEEP_RUNS = 10_000


class SweepMoved(NamedTuple):
    """A sweep whose status moved, and the report run it queued (once finished, if any)."""

    sweep_id: int
    status: RunStatus
    report_run: int | None


class SweepStore:
    def __init__(self, db: Database, runs: RunStore, jobs: JobStore) -> None:
        self.db = db
        self.runs = runs
        self.jobs = jobs

    def submit(self, req: SubmitSweep, user: str) -> DescribeSweep:
        check_notebook(req.content)
        overlap = sorted(set(req.grid) & set(req.parameters))
        if overlap:
            raise InvalidRequest(
                f"{', '.join(overlap)} is both a fixed parameter and swept; give it once"
            )
        combos = expand_sweep(req.grid, samples=req.samples, seed=req.seed)
        if len(combos) > MAX_SWEEP_RUNS:
            raise InvalidRequest(
                f"the grid makes {len(combos)} runs, more than {MAX_SWEEP_RUNS}; "
                "use --samples to draw some of them"
            )
        # Every combination is checked before any run exists: a bad value queues nothing.
        checked = [check_parameters(req.content, {**req.parameters, **c}) for c in combos]
        if req.report is not None:
            check_notebook(req.report.content)
            try:
                check_parameters(req.report.content, {"sweep": 0})
            except InvalidRequest as err:
                raise InvalidRequest(
                    f"the report notebook {req.report.notebook!r} cannot take the sweep: {err}; "
                    "give its 'parameters' cell a `sweep = 0` line"
                ) from None
        base = req.name or notebook_stem(req.notebook)
        # Read once for the sweep where it was submitted; every run records the same.
        environment = code_record(req.environment)
        with self.db.session() as session:
            check_queue(session, req.queue)
            sweep = self.runs.insert(
                session,
                CreateRun(
                    project=req.project,
                    name=f"{base} sweep",
                    kind=RunKind.sweep,
                    status=RunStatus.queued,
                    params={**req.parameters, **{k: {"sweep": v} for k, v in req.grid.items()}},
                    tags=req.tags,
                    queue=req.queue,
                    requested_gpus=req.gpus,
                    notebook=req.notebook,
                    environment=environment,
                ),
                user,
            )
            sweep.priority = req.priority  # its report job's
            if req.report is not None:
                report = req.report.model_dump(exclude={"environment"})
                sweep.job = {
                    "report": {**report, "environment": code_record(req.report.environment)}
                }
            session.flush()
            for i, (combo, params) in enumerate(zip(combos, checked, strict=True), 1):
                label = " ".join(f"{k}={v}" for k, v in combo.items())
                self.jobs.create_job(
                    session,
                    req,
                    params,
                    user,
                    name=f"{base} [{i}] {label}",
                    parent_id=sweep.id,
                    environment=environment,
                )
            session.flush()
        return self.get(sweep.id)

    def get(self, sweep_id: int) -> DescribeSweep:
        with self.db.session() as session:
            sweep = self.runs.load(session, sweep_id)
            if sweep.kind != RunKind.sweep.value:
                raise NotFound(f"run {sweep_id} is a {sweep.kind} run, not a sweep")
            children = list(
                session.scalars(select(Run).where(Run.parent_id == sweep_id).order_by(Run.id))
            )
            counts: dict[str, int] = {}
            for child in children:
                counts[child.status] = counts.get(child.status, 0) + 1
            return DescribeSweep(
                sweep=self.runs.describe(session, sweep),
                runs=self.runs.summaries(session, children),
                counts=counts,
                report_run=(sweep.job or {}).get("report_run"),
            )

    def parent_of(self, run_id: int) -> int | None:
        with self.db.session() as session:
            return session.scalar(select(Run.parent_id).where(Run.id == run_id))

    def refresh(self, sweep_id: int) -> RunStatus | None:
        """Move a sweep's own run along with its children; its new status when it moved."""
        with self.db.session() as session:
            return self._refresh(session, sweep_id)

    def refresh_of(self, run_ids: Collection[int]) -> list[SweepMoved]:
        """Move the sweeps of ``run_ids`` (runs that started or ended meanwhile) along with
        their children, each sweep once, in one transaction: the sweeps that moved.

        The dispatcher's way: a sweep's runs start and end by the hundred a second, and
        one look at a sweep after all of them says what one after each would.
        """
        with self.db.session() as session:
            parents = session.scalars(
                select(Run.parent_id)
                .where(Run.id.in_(run_ids), Run.parent_id.is_not(None))
                .distinct()
            ).all()
            moved = []
            for sweep_id in sorted(p for p in parents if p is not None):
                status = self._refresh(session, sweep_id)
                if status is None:
                    continue
                sweep = self.runs.load(session, sweep_id)
                report = (sweep.job or {}).get("report_run") if status.finished else None
                moved.append(SweepMoved(sweep_id, status, report))
            return moved

    def _refresh(self, session: Session, sweep_id: int) -> RunStatus | None:
        sweep = session.get(Run, sweep_id)
        if sweep is None or sweep.kind != RunKind.sweep.value:
            return None
        counts = dict(
            session.execute(
                select(Run.status, func.count())
                .where(Run.parent_id == sweep_id)
                .group_by(Run.status)
            ).all()
        )
        active = sum(counts.get(s.value, 0) for s in (RunStatus.queued, RunStatus.lost))
        running = counts.get(RunStatus.running.value, 0)
        current = RunStatus(sweep.status)
        target = current
        if running or (current == RunStatus.running and active):
            target = RunStatus.running
        elif not active and not running:
            if counts.get(RunStatus.failed.value):
                target = RunStatus.failed
            elif counts.get(RunStatus.cancelled.value) and not counts.get(
                RunStatus.completed.value
            ):
                target = RunStatus.cancelled
            else:
                target = RunStatus.completed
        if target == current or current.finished:
            return None
        if current == RunStatus.queued and target in (
            RunStatus.completed,
            RunStatus.failed,
        ):
            self.runs.transition(session, sweep, RunStatus.running)
        self.runs.transition(session, sweep, target)
        if target in (RunStatus.completed, RunStatus.failed):
            self._queue_report(session, sweep)
        return target

    def _queue_report(self, session: Session, sweep: Run) -> None:
        """The report a sweep asked for, queued as a job of its own with ``sweep`` set."""
        spec = (sweep.job or {}).get("report")
        if not spec:
            return
        project = session.get(Project, sweep.project_id)
        base = (sweep.name or f"sweep {sweep.id}").removesuffix(" sweep")
        job = SubmitJob(
            notebook=spec["notebook"],
            content=spec["content"],
            queue=sweep.queue or "default",
            project=project.name if project else "default",
            priority=sweep.priority,
        )
        params = check_parameters(job.content, {"sweep": sweep.id})
        report = self.jobs.create_job(
            session,
            job,
            params,
            sweep.user,
            name=f"{base} report",
            environment=spec.get("environment") or {},
            report=ReportOptions(name=f"{base} sweep {sweep.id}", code=spec.get("code", False)),
        )
        session.flush()
        # A new dict: SQLAlchemy sees a JSON column change only on assignment.
        sweep.job = {**(sweep.job or {}), "report_run": report.id}

    def report_run(self, sweep_id: int) -> int | None:
        """The run that makes a sweep's report, once the sweep has queued it."""
        with self.db.session() as session:
            sweep = session.get(Run, sweep_id)
            return (sweep.job or {}).get("report_run") if sweep is not None else None

    def cancel_children(self, sweep_id: int) -> list[int]:
        """Cancel a sweep's unfinished runs; the ids cancelled."""
        with self.db.session() as session:
            children = session.scalars(
                select(Run).where(
                    Run.parent_id == sweep_id,
                    Run.status.in_(
                        [RunStatus.queued.value, RunStatus.running.value, RunStatus.lost.value]
                    ),
                )
            ).all()
            for child in children:
                self.runs.transition(session, child, RunStatus.cancelled, "sweep cancelled")
            return [c.id for c in children]
