"""The dispatch cycle of a queued job: dispatched as an attempt, claimed by a worker once,
lost with its worker and queued again, or failed by its task.

The dispatcher reads and moves jobs only through this class; what it decides from what it
reads is the policy of ``jupyter_ext/scheduling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from labrun.errors import Conflict
from labrun.messages import JobSpec, RerunOf, RunError
from labrun.models import AttemptRef, ClaimRun, DescribeRun, RunKind, RunStatus

from ..scheduling import QueuedJob, QueueRule
from .database import Database
from .jobs import IS_JOB
from .leases import Hold, LeaseStore
from .runs import RunStore
from .tables import Project, Queue, Run, RunLog, utcnow
from .tokens import TokenStore


@dataclass
class JobInFlight:
    """A job dispatched and not ended: running, or waiting for its worker's claim."""

    id: int
    user: str
    queue: str
    gpus: int
    priority: int
    attempt: int
    worker: str | None


@dataclass
class RunningJob:
    id: int
    user: str
    gpus: int
    worker: str | None
    attempt: int
    started_at: datetime | None


class DispatchStore:
    def __init__(
        self, db: Database, runs: RunStore, tokens: TokenStore, leases: LeaseStore
    ) -> None:
        self.db = db
        self.runs = runs
        self.tokens = tokens
        self.leases = leases

    def _fence(self, session: Session, hold: Hold | None) -> None:
        # The dispatcher's changes are made for the scheduler of record only (None: a
        # caller that is not the dispatcher, such as a test).
        if hold is not None:
            self.leases.fence(session, hold)

    def queue_rules(self) -> dict[str, QueueRule]:
        """Each queue's priority and per-user GPU limit, as the policy takes them."""
        with self.db.session() as session:
            rows = session.execute(select(Queue.name, Queue.priority, Queue.max_gpus_per_user))
            return {name: QueueRule(priority, limit) for name, priority, limit in rows}

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

    def queued_among(self, run_ids: list[int]) -> list[QueuedJob]:
        """Those of ``run_ids`` that are queued jobs (what another server just queued)."""
        stmt = select(
            Run.id, Run.user, Run.queue, Run.requested_gpus, Run.priority, Run.attempt
        ).where(Run.status == RunStatus.queued.value, IS_JOB, Run.id.in_(run_ids))
        with self.db.session() as session:
            return [QueuedJob(*row) for row in session.execute(stmt.order_by(Run.id))]  # type: ignore[arg-type]

    def in_flight(self) -> list[JobInFlight]:
        """The jobs running, and those dispatched that no worker claimed yet."""
        stmt = select(
            Run.id,
            Run.user,
            Run.queue,
            Run.requested_gpus,
            Run.priority,
            Run.attempt,
            Run.worker,
        ).where(
            IS_JOB,
            (Run.status == RunStatus.running.value)
            | ((Run.status == RunStatus.queued.value) & Run.claimable_attempt.is_not(None)),
        )
        with self.db.session() as session:
            return [
                JobInFlight(id, user, queue or "default", gpus, priority, attempt, worker)
                for id, user, queue, gpus, priority, attempt, worker in session.execute(stmt)
            ]

    def placement(self, run_id: int) -> tuple[bool, str | None]:
        """Whether a run is a dispatched job (not a kernel's cell), and the worker it runs
        on (None before a worker claims it)."""
        with self.db.session() as session:
            row = session.execute(
                select(IS_JOB.label("is_job"), Run.worker).where(Run.id == run_id)
            ).one_or_none()
        return (False, None) if row is None else (bool(row.is_job), row.worker)

    def counts(self) -> tuple[int, int]:
        """How many jobs are queued and how many run, as the store has them."""
        with self.db.session() as session:
            rows = dict(
                session.execute(
                    select(Run.status, func.count())
                    .where(
                        IS_JOB,
                        Run.status.in_([RunStatus.queued.value, RunStatus.running.value]),
                    )
                    .group_by(Run.status)
                ).all()
            )
        return rows.get(RunStatus.queued.value, 0), rows.get(RunStatus.running.value, 0)

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

    def next_attempts(
        self, run_ids: list[int], token_lifetime: float, hold: Hold | None = None
    ) -> list[JobSpec]:
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
            self._fence(session, hold)
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
        specs = []
        for row in rows:
            job = row.job or {}
            token = tokens.get(row.id)
            rerun = job.get("rerun")
            specs.append(
                JobSpec(
                    run_id=row.id,
                    kind=row.kind,
                    attempt=row.attempt,
                    gpus=row.requested_gpus,
                    project=projects[row.project_id],
                    source=row.source,
                    cell=job.get("cell"),
                    notebook=row.notebook,
                    content=job.get("content"),
                    cwd=job.get("cwd"),
                    timeout=job.get("timeout"),
                    parameters=job.get("parameters", {}),
                    report=job.get("report"),
                    token=token.token if token is not None else None,
                    token_id=token.id if token is not None else None,
                    rerun=RerunOf.model_validate(rerun) if rerun else None,
                )
            )
        return specs

    def claim(self, run_id: int, req: ClaimRun, *, max_attempts: int = 3) -> DescribeRun:
        """A worker starts ``run_id``: allowed once per dispatched attempt, never twice.

        The worker's record of the machine joins the run's environment (a later attempt's
        replaces an earlier one's), and a retried attempt's part of the log starts with a
        marker line that says which attempt it is and where it runs.
        """
        with self.db.session() as session:
            run = self.runs.load(session, run_id)
            self.start(session, run, req, max_attempts)
            session.flush()
            return self.runs.describe(session, run)

    def start(self, session: Session, run: Run, req: ClaimRun, max_attempts: int) -> None:
        """:meth:`claim`'s change to ``run``, in the caller's transaction."""
        if run.status != RunStatus.queued.value or run.claimable_attempt != req.attempt:
            raise Conflict(
                f"run {run.id} is {run.status} at attempt {run.attempt}; attempt "
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
                    run_id=run.id,
                    stream="system",
                    text=marker,
                    time=utcnow(),
                    attempt=req.attempt,
                )
            )

    def lose(
        self, run_id: int, reason: str, *, max_attempts: int, hold: Hold | None = None
    ) -> RunStatus | None:
        """Mark a job lost (its worker went away) and queue it again while attempts last.

        Returns its new status, or None when it had already finished.
        """
        with self.db.session() as session:
            self._fence(session, hold)
            run = self.runs.load(session, run_id)
            if RunStatus(run.status).finished:
                return None
            return self._lose(session, run, reason, max_attempts)

    def _lose(self, session: Session, run: Run, reason: str, max_attempts: int) -> RunStatus:
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
            run.error = RunError(type="Lost", message=message).record()
        return RunStatus(run.status)

    def abandoned(self, worker: str, attempts: list[AttemptRef], *, max_attempts: int) -> list[int]:
        """Lose the jobs ``worker`` gave up, cut off from the server (executor/fencing.py),
        where the store still has that attempt running there: a server that did not count
        the worker gone meanwhile (it was down, or the worker was only slow) would otherwise
        wait for them for ever. The ids of the runs lost."""
        lost = []
        with self.db.session() as session:
            for ref in attempts:
                run = session.get(Run, ref.run_id, with_for_update=True)
                if (
                    run is not None
                    and run.status == RunStatus.running.value
                    and (run.attempt, run.worker) == (ref.attempt, worker)
                ):
                    self._lose(session, run, f"its worker {worker} gave it up", max_attempts)
                    lost.append(run.id)
        return lost

    def fail(self, run_id: int, error: RunError) -> bool:
        """Fail a job that has not finished (its task broke before it could say so)."""
        with self.db.session() as session:
            run = self.runs.load(session, run_id)
            if RunStatus(run.status).finished:
                return False
            self.runs.transition(session, run, RunStatus.failed, error.message)
            run.error = error.record()
            run.devices = None
            return True
