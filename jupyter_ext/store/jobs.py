"""Jobs: durable queued rows, claims by workers, losses and retries, sweeps.

A job is a run whose ``job`` column holds everything needed to run it, so the queue
survives a server restart: a notebook job (kind ``notebook``, the notebook itself
included) or a re-run cell (kind ``cell``: its source is the run's, its inputs an
artifact). A cell that a kernel sends has no ``job``: the kernel submits it itself. The
dispatcher reads and moves jobs only through this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from labrun.errors import Conflict, InvalidRequest, NotFound
from labrun.models import (
    ClaimRun,
    CodeState,
    CreateRun,
    DescribeRun,
    DescribeSweep,
    JobOptions,
    ReportOptions,
    RunKind,
    RunStatus,
    SubmitJob,
    SubmitSweep,
)
from labrun.params import check_notebook, check_parameters, expand_sweep

from . import reruns
from .database import Database
from .runs import RunStore
from .tables import Project, Queue, Run, RunLog, utcnow
from .tokens import TokenStore

# More runs than this in one sweep is almost certainly a typo in a grid.
MAX_SWEEP_RUNS = 10_000


def notebook_stem(path: str) -> str:
    """A notebook's name without its folder and suffix: what unnamed jobs are called."""
    return path.rsplit("/", 1)[-1].removesuffix(".ipynb")


def code_record(code: CodeState | None) -> dict[str, Any]:
    """What a job's run records of its code at submission (its worker adds the machine)."""
    return code.model_dump(exclude_unset=True) if code is not None else {}


# The runs the dispatcher runs: notebook jobs, and cells re-run from the server.
IS_JOB = (Run.kind == RunKind.notebook.value) | (
    (Run.kind == RunKind.cell.value) & Run.job.is_not(None)
)


@dataclass
class QueuedJob:
    """What the dispatcher needs to order a queued job, without the notebook."""

    id: int
    user: str
    queue: str
    gpus: int
    priority: int
    attempt: int


@dataclass
class RunningJob:
    id: int
    user: str
    gpus: int
    worker: str | None
    attempt: int
    started_at: datetime | None


class JobStore:
    def __init__(self, db: Database, runs: RunStore, tokens: TokenStore) -> None:
        self.db = db
        self.runs = runs
        self.tokens = tokens

    # --- submission --------------------------------------------------------------

    @staticmethod
    def _check_queue(session: Session, name: str) -> None:
        if session.get(Queue, name) is None:
            names = ", ".join(session.scalars(select(Queue.name).order_by(Queue.name)))
            raise NotFound(
                f"no queue named {name!r}; the queues are: {names} "
                "(`labrun queues create NAME` makes one)"
            )

    def _create_job(
        self,
        session: Session,
        opts: JobOptions,
        params: dict[str, Any],
        user: str,
        *,
        name: str | None,
        parent_id: int | None = None,
        environment: dict[str, Any] | None = None,
        report: ReportOptions | None = None,
    ) -> Run:
        req = CreateRun(
            project=opts.project,
            name=name,
            kind=RunKind.notebook,
            status=RunStatus.queued,
            params=params,
            tags=opts.tags,
            queue=opts.queue,
            requested_gpus=opts.gpus,
            notebook=opts.notebook,
            parent_id=parent_id,
            environment=environment or {},
        )
        run = self.runs.insert(session, req, user)
        # The parameters again, exactly: SQLite's numeric affinity reads a JSON 1.0 stored
        # alone in params.value back as 1, and papermill must inject what was asked.
        run.job = {
            "content": opts.content,
            "cwd": opts.cwd,
            "timeout": opts.timeout,
            "parameters": params,
        }
        if report is not None:
            run.job["report"] = report.model_dump()
        return run

    def submit(self, req: SubmitJob, user: str) -> DescribeRun:
        check_notebook(req.content)
        params = check_parameters(req.content, req.parameters)
        with self.db.session() as session:
            self._check_queue(session, req.queue)
            # Unnamed jobs are named after their notebook, as `labrun submit` names them.
            run = self._create_job(
                session,
                req,
                params,
                user,
                name=req.name or notebook_stem(req.notebook),
                environment=code_record(req.environment),
                report=req.report,
            )
            session.flush()
            return self.runs.describe(session, run)

    def submit_sweep(self, req: SubmitSweep, user: str) -> DescribeSweep:
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
            self._check_queue(session, req.queue)
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
            if req.report is not None:
                report = req.report.model_dump(exclude={"environment"})
                sweep.job = {
                    "report": {**report, "environment": code_record(req.report.environment)}
                }
            session.flush()
            for i, (combo, params) in enumerate(zip(combos, checked, strict=True), 1):
                label = " ".join(f"{k}={v}" for k, v in combo.items())
                self._create_job(
                    session,
                    req,
                    params,
                    user,
                    name=f"{base} [{i}] {label}",
                    parent_id=sweep.id,
                    environment=environment,
                )
            session.flush()
        return self.sweep(sweep.id)

    def sweep(self, sweep_id: int) -> DescribeSweep:
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

    def rerun(self, run_id: int, user: str, *, strict: bool = False) -> DescribeRun:
        """A new job with the same notebook (or cell), parameters, inputs, resources and
        dataset versions; ``strict``: it fails, before running, on other packages."""
        with self.db.session() as session:
            original = self.runs.load(session, run_id)
            if original.kind == RunKind.cell.value:
                rerun = reruns.rerun_cell
            elif original.kind == RunKind.notebook.value and original.job:
                rerun = reruns.rerun_notebook
            else:
                raise InvalidRequest(
                    f"run {run_id} is a {original.kind} run; only notebook jobs and "
                    "%%mlrun cells can be re-run"
                )
            self._check_queue(session, original.queue or "default")
            run = rerun(self.runs, session, original, user, strict)
            session.flush()
            return self.runs.describe(session, run)

    # --- what the dispatcher reads -------------------------------------------------

    def queued(self, run_id: int | None = None) -> list[QueuedJob]:
        """Every queued job, oldest first (or just ``run_id``, if queued)."""
        stmt = select(
            Run.id, Run.user, Run.queue, Run.requested_gpus, Run.priority, Run.attempt
        ).where(Run.status == RunStatus.queued.value, IS_JOB)
        if run_id is not None:
            stmt = stmt.where(Run.id == run_id)
        with self.db.session() as session:
            rows = session.execute(stmt.order_by(Run.id))
            return [QueuedJob(*row) for row in rows]  # type: ignore[arg-type]

    def parent_of(self, run_id: int) -> int | None:
        with self.db.session() as session:
            return session.scalar(select(Run.parent_id).where(Run.id == run_id))

    def running(self) -> list[RunningJob]:
        with self.db.session() as session:
            rows = session.execute(
                select(
                    Run.id, Run.user, Run.requested_gpus, Run.worker, Run.attempt, Run.started_at
                ).where(Run.status == RunStatus.running.value, IS_JOB)
            )
            return [RunningJob(*row) for row in rows]

    def usage(self, window: timedelta) -> dict[str, float]:
        """Slot-hours per user over ``window``: each run weighs its GPUs (a CPU job, 1),
        times the hours it ran inside the window, running runs up to now."""
        now = utcnow()
        since = now - window
        out: dict[str, float] = {}
        with self.db.session() as session:
            rows = session.execute(
                select(Run.user, Run.requested_gpus, Run.started_at, Run.ended_at).where(
                    Run.kind == RunKind.notebook.value,
                    Run.started_at.is_not(None),
                    (Run.ended_at.is_(None)) | (Run.ended_at >= since),
                )
            )
            for user, gpus, started, ended in rows:
                start = max(started or now, since)
                end = ended or now
                hours = max(0.0, (end - start).total_seconds()) / 3600
                out[user] = out.get(user, 0.0) + max(gpus, 1) * hours
        return out

    def dispatch(self, run_ids: list[int], token_lifetime: float) -> list[dict[str, Any]]:
        """Count a new attempt for each still-queued job and return what its worker needs.

        One UPDATE ... RETURNING for the batch: the dispatcher calls this once a round, and
        a round during a busy sweep starts a job or two. A notebook job gets a token of its
        own, scoped to its run and acting as its owner, for the code in its kernel: the
        pool's token stays with the worker.
        """
        attempt = Run.attempt + 1
        # The signing secret is read (or made, the first time) before the transaction
        # below holds SQLite's write lock.
        _ = self.tokens.secret
        with self.db.session() as session:
            rows = session.execute(
                update(Run)
                .where(Run.id.in_(run_ids), Run.status == RunStatus.queued.value)
                .values(attempt=attempt, claimable_attempt=attempt)
                .returning(
                    Run.id,
                    Run.attempt,
                    Run.requested_gpus,
                    Run.notebook,
                    Run.job,
                    Run.project_id,
                    Run.kind,
                    Run.source,
                    Run.user,
                ),
                execution_options={"synchronize_session": False},
            ).all()
            projects = dict(
                session.execute(
                    select(Project.id, Project.name).where(
                        Project.id.in_({row.project_id for row in rows})
                    )
                ).all()
            )
            tokens = {
                row.id: self.tokens.add(
                    session,
                    user=row.user,
                    name=f"run-{row.id}-attempt-{row.attempt}",
                    scope="run",
                    run_id=row.id,
                    lifetime=token_lifetime,
                )
                for row in rows
                if row.kind == RunKind.notebook.value
            }
        return [
            {
                "run_id": row.id,
                "kind": row.kind,
                "attempt": row.attempt,
                "gpus": row.requested_gpus,
                "project": projects[row.project_id],
                "source": row.source,
                "cell": (row.job or {}).get("cell"),
                "notebook": row.notebook,
                "content": (row.job or {}).get("content"),
                "cwd": (row.job or {}).get("cwd"),
                "timeout": (row.job or {}).get("timeout"),
                "parameters": (row.job or {}).get("parameters", {}),
                "report": (row.job or {}).get("report"),
                "token": tokens[row.id].token if row.id in tokens else None,
                "token_id": tokens[row.id].id if row.id in tokens else None,
                "rerun": (row.job or {}).get("rerun"),
            }
            for row in rows
        ]

    def claim(self, run_id: int, req: ClaimRun, *, max_attempts: int = 3) -> DescribeRun:
        """A worker starts ``run_id``: allowed once per dispatched attempt, never twice.

        The worker's record of the machine joins the run's environment (a later attempt's
        replaces an earlier one's), and a retried attempt's part of the log starts with a
        marker line that says which attempt it is and where it runs.
        """
        with self.db.session() as session:
            run = self.runs.load(session, run_id)
            if run.status != RunStatus.queued.value or run.claimable_attempt != req.attempt:
                raise Conflict(
                    f"run {run_id} is {run.status} at attempt {run.attempt}; attempt "
                    f"{req.attempt} on {req.worker} must not start it"
                )
            self.runs.transition(session, run, RunStatus.running, f"on {req.worker}")
            run.claimable_attempt = None
            run.worker = req.worker
            run.devices = req.devices
            if req.environment:
                # A new dict: SQLAlchemy sees a JSON column change only on assignment.
                run.environment = {**(run.environment or {}), **req.environment}
            if req.attempt > 1:
                marker = f"--- attempt {req.attempt} of {max_attempts} on {req.worker} ---\n"
                session.add(
                    RunLog(
                        run_id=run_id,
                        stream="system",
                        text=marker,
                        time=utcnow(),
                        attempt=req.attempt,
                    )
                )
            session.flush()
            return self.runs.describe(session, run)

    def lose(self, run_id: int, reason: str, *, max_attempts: int) -> RunStatus | None:
        """Mark a job lost (its worker went away) and queue it again while attempts last.

        Returns its new status, or None when it had already finished.
        """
        with self.db.session() as session:
            run = self.runs.load(session, run_id)
            if RunStatus(run.status).finished:
                return None
            self.runs.transition(session, run, RunStatus.lost, reason)
            run.devices = None
            run.claimable_attempt = None
            if run.attempt < max_attempts:
                self.runs.transition(
                    session, run, RunStatus.queued, f"retry {run.attempt + 1} of {max_attempts}"
                )
                run.worker = None
                run.started_at = None
                run.ended_at = None
            else:
                message = f"lost {run.attempt} times ({reason}); not retried again"
                self.runs.transition(session, run, RunStatus.failed, message)
                run.error = {"type": "Lost", "message": message}
            return RunStatus(run.status)

    def fail(self, run_id: int, message: str, error_type: str = "JobError") -> bool:
        """Fail a job that has not finished (its task broke before it could say so)."""
        with self.db.session() as session:
            run = self.runs.load(session, run_id)
            if RunStatus(run.status).finished:
                return False
            self.runs.transition(session, run, RunStatus.failed, message)
            run.error = {"type": error_type, "message": message}
            run.devices = None
            return True

    def refresh_sweep(self, sweep_id: int) -> RunStatus | None:
        """Move a sweep's own run along with its children; its new status when it moved."""
        with self.db.session() as session:
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
                self._queue_sweep_report(session, sweep)
            return target

    def _queue_sweep_report(self, session: Session, sweep: Run) -> None:
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
        )
        params = check_parameters(job.content, {"sweep": sweep.id})
        report = self._create_job(
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

    def sweep_report_run(self, sweep_id: int) -> int | None:
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
