"""Runs: create, read, list (filtered, sorted by any column, parameter or metric), update."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labrun.errors import Conflict, InvalidRequest, NotFound
from labrun.models import (
    FINISHED_STATUSES,
    CompareRow,
    Comparison,
    CreateRun,
    DescribeProject,
    DescribeRun,
    ListRunsQuery,
    MetricCompareRow,
    ProjectList,
    RunKind,
    RunList,
    RunStatus,
    RunSummary,
    RunTransitionOut,
    UpdateRun,
)

from .database import Database
from .listing import (
    SUMMARY_COLUMNS,
    SUMMARY_NAMES,
    Cursor,
    conditions,
    page,
    sparklines,
    summary,
)
from .tables import (
    PARAM_TEXT,
    MetricSummary,
    Param,
    Project,
    Queue,
    Run,
    RunLog,
    RunTransition,
    utcnow,
)

# Which status may follow which. A finished run stays finished; a lost one may be
# queued again (the dispatcher's retry) or given up.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.queued: frozenset(
        {RunStatus.running, RunStatus.cancelled, RunStatus.failed, RunStatus.lost}
    ),
    RunStatus.running: frozenset(
        {RunStatus.completed, RunStatus.failed, RunStatus.cancelled, RunStatus.lost}
    ),
    RunStatus.lost: frozenset({RunStatus.queued, RunStatus.failed, RunStatus.cancelled}),
    RunStatus.completed: frozenset(),
    RunStatus.failed: frozenset(),
    RunStatus.cancelled: frozenset(),
}


def numeric(value: Any) -> float | None:
    """The number a parameter value sorts by, or None for non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return number if math.isfinite(number) else None


def _summary_fields(run: Run) -> dict[str, Any]:
    values = {name: getattr(run, name) for name in SUMMARY_NAMES if name != "project"}
    return summary({**values, "project": run.project.name})


@dataclass
class UnsettledCell:
    run_id: int
    key: str
    pool_client: str | None
    created_at: datetime


class RunStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- helpers used by the other stores too --------------------------------------

    @staticmethod
    def load(session: Session, run_id: int) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id!r}; `labrun runs` lists the runs")
        return run

    @staticmethod
    def _project(session: Session, name: str) -> Project:
        for obj in session.identity_map.values():  # a sweep's runs share it: look it up once
            if isinstance(obj, Project) and obj.name == name:
                return obj
        project = session.scalar(select(Project).where(Project.name == name))
        if project is None:
            project = Project(name=name)
            try:  # a savepoint: another server may add it at once; then that row is it
                with session.begin_nested():
                    session.add(project)
            except IntegrityError:
                project = session.scalars(select(Project).where(Project.name == name)).one()
        return project

    @staticmethod
    def params_of(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {run_id: {} for run_id in run_ids}
        if run_ids:
            rows = session.execute(
                select(Param.run_id, Param.key, Param.value).where(Param.run_id.in_(run_ids))
            )
            for run_id, key, value in rows:
                out[run_id][key] = value
        return out

    @staticmethod
    def _metrics_of(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, float | None]]:
        out: dict[int, dict[str, float | None]] = {run_id: {} for run_id in run_ids}
        if run_ids:
            rows = session.execute(
                select(MetricSummary.run_id, MetricSummary.key, MetricSummary.value).where(
                    MetricSummary.run_id.in_(run_ids)
                )
            )
            for run_id, key, value in rows:
                out[run_id][key] = value
        return out

    def describe(self, session: Session, run: Run) -> DescribeRun:
        return DescribeRun(
            **_summary_fields(run),
            params=self.params_of(session, [run.id])[run.id],
            metrics=self._metrics_of(session, [run.id])[run.id],
            source=run.source,
            notebook=run.notebook,
            environment=run.environment or {},
            error=run.error,
            devices=run.devices,
        )

    @staticmethod
    def _set_params(
        session: Session, run_id: int, params: dict[str, Any], *, new: bool = False
    ) -> None:
        for key, value in params.items():
            if not key or len(key) > 256:
                raise InvalidRequest(f"parameter name {key!r} must be 1 to 256 characters")
            number = numeric(value)
            param = Param(
                run_id=run_id,
                key=key,
                value=value,
                value_num=number,
                value_text=None if number is not None else json.dumps(value)[:PARAM_TEXT],
            )
            # A new run has no parameters to replace: skip merge's SELECT per parameter.
            if new:
                session.add(param)
            else:
                session.merge(param)

    @staticmethod
    def transition(
        session: Session,
        run: Run,
        status: RunStatus,
        message: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Move ``run`` to ``status``, stamping the time; refuse an impossible move."""
        current = RunStatus(run.status)
        if status == current:
            return
        if status not in TRANSITIONS[current]:
            raise Conflict(
                f"run {run.id} is {current.value} and cannot become {status.value}"
                + ("; start a new run or `labrun rerun` it" if current.finished else "")
            )
        now = at or utcnow()
        run.status = status.value
        if status == RunStatus.queued:
            run.queued_at = now
            run.duration = None
        elif status == RunStatus.running:
            run.started_at = run.started_at or now
        elif status in FINISHED_STATUSES or status == RunStatus.lost:
            run.ended_at = now
            if run.started_at is not None:
                run.duration = (now - run.started_at).total_seconds()
        session.add(RunTransition(run_id=run.id, status=status.value, time=now, message=message))

    # --- the operations ----------------------------------------------------------------

    def insert(self, session: Session, req: CreateRun, user: str) -> Run:
        """Add a run (and its first transition and parameters) inside ``session``."""
        if req.queue is not None and session.get(Queue, req.queue) is None:
            raise NotFound(f"no queue named {req.queue!r}; `labrun queues` lists them")
        if req.parent_id is not None:
            self.load(session, req.parent_id)
        now = utcnow()
        run = Run(
            key=req.key,
            project=self._project(session, req.project),
            name=req.name,
            kind=req.kind.value,
            status=req.status.value,
            user=user,
            queue=req.queue,
            requested_gpus=req.requested_gpus,
            resources={"GPU": req.requested_gpus} if req.requested_gpus else {},
            tags=req.tags,
            source=req.source,
            notebook=req.notebook,
            environment=req.environment,
            parent_id=req.parent_id,
            created_at=now,
            queued_at=now if req.status == RunStatus.queued else None,
            started_at=now if req.status == RunStatus.running else None,
        )
        session.add(run)
        session.flush()
        session.add(RunTransition(run_id=run.id, status=run.status, time=now))
        self._set_params(session, run.id, req.params, new=True)
        return run

    def create(self, req: CreateRun, user: str) -> DescribeRun:
        """Add a run; with a key that exists already, the run that has it (a retry)."""
        if req.key is not None:
            with self.db.session() as session:
                found = session.scalar(select(Run).where(Run.key == req.key))
                if found is not None:
                    return self.describe(session, found)
        try:
            with self.db.session() as session:
                run = self.insert(session, req, user)
                session.flush()
                return self.describe(session, run)
        except IntegrityError:
            if req.key is None:
                raise
        # Two requests with one key raced: the other one made it.
        with self.db.session() as session:
            return self.describe(
                session, session.scalars(select(Run).where(Run.key == req.key)).one()
            )

    def get(self, run_id: int) -> DescribeRun:
        with self.db.session() as session:
            return self.describe(session, self.load(session, run_id))

    def lineage(self, run_id: int, depth: int) -> dict[int, tuple[str, int | None, str]]:
        """The owner, parent and project of a run and of up to ``depth`` - 1 of its
        ancestors."""
        out: dict[int, tuple[str, int | None, str]] = {}
        with self.db.session() as session:
            run: Run | None = self.load(session, run_id)
            while run is not None and len(out) < depth:
                out[run.id] = (run.user, run.parent_id, run.project.name)
                run = session.get(Run, run.parent_id) if run.parent_id is not None else None
        return out

    def unsettled_cells(self, older_than: float, most: int = 500) -> list[UnsettledCell]:
        """``%%mlrun`` cells still queued or running after ``older_than`` seconds, with the
        Dask client of the kernel that sent each (oldest first)."""
        before = utcnow() - timedelta(seconds=older_than)
        with self.db.session() as session:
            rows = session.execute(
                select(Run.id, Run.key, Run.environment, Run.created_at)
                .where(
                    Run.kind == RunKind.cell.value,
                    Run.job.is_(None),
                    Run.status.in_([RunStatus.queued.value, RunStatus.running.value]),
                    Run.created_at < before,
                    Run.key.is_not(None),
                )
                .order_by(Run.id)
                .limit(most)
            )
            return [
                UnsettledCell(run_id, key, (env or {}).get("pool_client"), created)
                for run_id, key, env, created in rows
            ]

    def cell_key(self, run_id: int) -> str | None:
        """The key a kernel's cell run was created with (its Dask task is named by it)."""
        with self.db.session() as session:
            return session.scalar(
                select(Run.key).where(
                    Run.id == run_id, Run.kind == RunKind.cell.value, Run.job.is_(None)
                )
            )

    @staticmethod
    def check_attempt(run: Run, attempt: int | None, what: str) -> None:
        """Refuse ``what`` from a dispatched ``attempt`` that no longer speaks for the run: a
        cut-off worker sends its records once back, maybe after the job was lost and run
        again. Its lines stay in the log as that attempt's; its status and files would
        overwrite the next attempt's."""
        current = attempt == run.attempt
        if attempt is None or (current and run.status not in ("queued", "lost")):
            return
        fate = "was lost" if current or attempt < run.attempt else "was never dispatched"
        raise Conflict(
            f"run {run.id} is {run.status} at attempt {run.attempt}: {what} of attempt "
            f"{attempt!r} is not kept, because that attempt {fate}"
        )

    def apply(self, session: Session, run: Run, req: UpdateRun) -> None:
        """``req``'s change to ``run``, in the caller's transaction."""
        self.check_attempt(run, req.attempt, "this update")
        if req.started_at is not None and run.status == RunStatus.queued.value:
            # Start and end reported together (a short cell): each at its own time.
            self.transition(session, run, RunStatus.running, at=req.started_at)
        changed = True
        if req.status is not None:
            message = (req.error or {}).get("message") if req.error else None
            changed = run.status != req.status.value
            self.transition(session, run, req.status, message)
        if req.log and changed:
            # Appended with the status that ends the run, and only then: a repeated end
            # record (the kernel's, after the server settled it) adds nothing.
            now = utcnow()
            session.add_all(
                RunLog(
                    run_id=run.id,
                    stream=e.stream,
                    text=e.text,
                    time=now,
                    attempt=max(run.attempt, 1),  # a kernel's cell: never dispatched, attempt 0
                )
                for e in req.log
            )
        for field in ("name", "tags", "worker", "environment", "error", "devices"):
            value = getattr(req, field)
            if value is not None:
                setattr(run, field, value)

    def update(self, run_id: int, req: UpdateRun) -> DescribeRun:
        with self.db.session() as session:
            run = self.load(session, run_id)
            self.apply(session, run, req)
            session.flush()
            return self.describe(session, run)

    def cancel(self, run_id: int, change: UpdateRun | None = None) -> tuple[DescribeRun, bool]:
        """Cancel a run: by request (a finished run is a conflict), or by an update that
        sets ``cancelled`` along with other fields (a run already cancelled stays so).

        Returns the run and whether it became cancelled now, so its job is stopped once.
        """
        with self.db.session() as session:
            run = self.load(session, run_id)
            was = run.status
            if change is None:
                if RunStatus(run.status).finished:
                    raise Conflict(
                        f"run {run_id} is already {run.status}; there is nothing to cancel"
                    )
                self.transition(session, run, RunStatus.cancelled, "cancelled by request")
            else:
                self.apply(session, run, change)
            session.flush()
            now_cancelled = run.status == RunStatus.cancelled.value and was != run.status
            return self.describe(session, run), now_cancelled

    def log_params(self, run_id: int, params: dict[str, Any]) -> dict[str, Any]:
        with self.db.session() as session:
            self.load(session, run_id)
            self._set_params(session, run_id, params)
            session.flush()
            return self.params_of(session, [run_id])[run_id]

    def params(self, run_id: int) -> dict[str, Any]:
        with self.db.session() as session:
            self.load(session, run_id)
            return self.params_of(session, [run_id])[run_id]

    def list_runs(self, query: ListRunsQuery) -> RunList:
        with self.db.session() as session:
            where = conditions(query, self.db.dialect)
            # Rows, not ORM objects: a page's runs are read as values, a third of the cost.
            stmt = select(*SUMMARY_COLUMNS).join(Run.project).where(*where)
            # Counted without the join to projects: every run has one, and the join would
            # visit every run's project (a quarter of a second at a million runs).
            total = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
            cursor = None
            if query.cursor is not None:
                if query.offset:
                    raise InvalidRequest(
                        f"offset {query.offset!r} and a cursor were both given; a cursor "
                        "says where the page starts, so leave offset out"
                    )
                cursor = Cursor.decode(query.cursor, query.sort)
            rows, after, position = page(
                session,
                stmt,
                query.sort,
                offset=query.offset,
                limit=query.limit,
                cursor=cursor,
                width=len(SUMMARY_COLUMNS),
            )
            runs = [summary(dict(zip(SUMMARY_NAMES, row, strict=True))) for row in rows]
            return RunList(
                runs=self._summaries(session, runs),
                total=total,
                offset=position,
                limit=query.limit,
                next_cursor=after.encode() if after is not None else None,
                sparklines=sparklines(session, [r["id"] for r in runs], query.spark)
                if query.spark
                else {},
            )

    def summaries(self, session: Session, runs: Sequence[Run]) -> list[RunSummary]:
        return self._summaries(session, [_summary_fields(run) for run in runs])

    def _summaries(self, session: Session, fields: list[dict[str, Any]]) -> list[RunSummary]:
        """Summaries with each run's parameters and latest metrics."""
        ids = [run["id"] for run in fields]
        params = self.params_of(session, ids)
        metrics = self._metrics_of(session, ids)
        return [
            RunSummary(**run, params=params[run["id"]], metrics=metrics[run["id"]])
            for run in fields
        ]

    def summaries_by_worker(self) -> dict[str, list[RunSummary]]:
        """The running runs, grouped by the worker that runs them."""
        with self.db.session() as session:
            runs = session.scalars(
                select(Run).where(Run.status == RunStatus.running.value, Run.worker.is_not(None))
            ).all()
            out: dict[str, list[RunSummary]] = {}
            for run, summary in zip(runs, self.summaries(session, runs), strict=True):
                out.setdefault(run.worker or "", []).append(summary)
            return out

    def compare(self, run_ids: Iterable[int]) -> Comparison:
        ids = list(dict.fromkeys(run_ids))
        with self.db.session() as session:
            runs = [self.load(session, run_id) for run_id in ids]
            summaries = self.summaries(session, runs)

        def rows(values_of: list[dict[str, Any]], row: type[CompareRow]) -> list[Any]:
            keys = sorted({key for values in values_of for key in values})
            out = []
            for key in keys:
                values = [values.get(key) for values in values_of]
                out.append(row(key=key, values=values, differs=len(set(map(repr, values))) > 1))
            return out

        return Comparison(
            runs=summaries,
            params=rows([s.params for s in summaries], CompareRow),
            metrics=rows([dict(s.metrics) for s in summaries], MetricCompareRow),
        )

    def projects(self) -> ProjectList:
        with self.db.session() as session:
            # A count per project from the (project_id, id) index: a third of the cost of
            # joining every run to its project and grouping them.
            runs = select(func.count()).where(Run.project_id == Project.id).scalar_subquery()
            rows = session.execute(select(Project, runs).order_by(Project.name))
            return ProjectList(
                projects=[
                    DescribeProject(name=p.name, created_at=p.created_at, runs=n) for p, n in rows
                ]
            )

    def transitions(self, run_id: int) -> list[RunTransitionOut]:
        """Every status the run passed through, oldest first."""
        with self.db.session() as session:
            self.load(session, run_id)
            rows = session.scalars(
                select(RunTransition)
                .where(RunTransition.run_id == run_id)
                .order_by(RunTransition.id)
            )
            return [RunTransitionOut(status=t.status, time=t.time, message=t.message) for t in rows]
