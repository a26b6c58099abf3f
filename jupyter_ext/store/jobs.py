"""Jobs: a notebook submitted to run on the pool, and a run queued again (a re-run).

A job is a run whose ``job`` column holds everything needed to run it, so the queue
survives a server restart: a notebook job (kind ``notebook``, the notebook itself
included) or a re-run cell (kind ``cell``: its source is the run's, its inputs an
artifact). A cell that a kernel sends has no ``job``: the kernel submits it itself.
What happens to a job once queued (dispatched, claimed, lost) is in ``dispatch.py``; a
sweep of jobs is in ``sweeps.py``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labrun.errors import InvalidRequest, NotFound
from labrun.models import (
    CodeState,
    CreateRun,
    DescribeRun,
    JobOptions,
    ReportOptions,
    RunKind,
    RunStatus,
    SubmitJob,
)
from labrun.params import check_notebook, check_parameters

from . import reruns
from .database import Database
from .runs import RunStore
from .tables import Queue, Run

# The runs the dispatcher runs: notebook jobs, and cells re-run from the server.
IS_JOB = (Run.kind == RunKind.notebook.value) | (
    (Run.kind == RunKind.cell.value) & Run.job.is_not(None)
)


def notebook_stem(path: str) -> str:
    """A notebook's name without its folder and suffix: what unnamed jobs are called."""
    return path.rsplit("/", 1)[-1].removesuffix(".ipynb")


def code_record(code: CodeState | None) -> dict[str, Any]:
    """What a job's run records of its code at submission (its worker adds the machine)."""
    return code.model_dump(exclude_unset=True) if code is not None else {}


def check_queue(session: Session, name: str) -> None:
    if session.get(Queue, name) is None:
        names = ", ".join(session.scalars(select(Queue.name).order_by(Queue.name)))
        raise NotFound(
            f"no queue named {name!r}; the queues are: {names} "
            "(`labrun queues create NAME` makes one)"
        )


class JobStore:
    def __init__(self, db: Database, runs: RunStore) -> None:
        self.db = db
        self.runs = runs

    def create_job(
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
        """A notebook job's run, queued, with the job its worker needs."""
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
        run.priority = opts.priority
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
            check_queue(session, req.queue)
            # Unnamed jobs are named after their notebook, as `labrun submit` names them.
            run = self.create_job(
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
            check_queue(session, original.queue or "default")
            run = rerun(self.runs, session, original, user, strict)
            session.flush()
            return self.runs.describe(session, run)
