"""Reports: rendered report notebooks, each made by a run that executed it.

A report points at its run's artifacts (the HTML, the executed notebook) by their
content-addressed URIs, so the files are stored once, with the run.
"""

from __future__ import annotations

from sqlalchemy import select

from labrun.errors import NotFound
from labrun.models import CreateReport, DescribeReport, ListReportsQuery, ReportList

from .database import Database
from .runs import RunStore
from .tables import Artifact, Report, Run


def describe(report: Report) -> DescribeReport:
    return DescribeReport(
        id=report.id,
        name=report.name,
        notebook=report.notebook,
        params=report.params,
        run_id=report.run_id,
        user=report.user,
        created_at=report.created_at,
        has_html=report.html_uri is not None,
        has_notebook=report.notebook_uri is not None,
    )


class ReportStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, req: CreateReport, user: str) -> DescribeReport:
        with self.db.session() as session:
            RunStore.load(session, req.run_id)

            def uri_of(name: str) -> str:
                artifact = session.scalar(
                    select(Artifact).where(Artifact.run_id == req.run_id, Artifact.name == name)
                )
                if artifact is None:
                    raise NotFound(
                        f"run {req.run_id} has no artifact {name!r}; upload the rendered "
                        "report to the run first"
                    )
                return artifact.uri

            report = Report(
                name=req.name,
                notebook=req.notebook,
                params=req.params,
                run_id=req.run_id,
                html_uri=uri_of(req.html_artifact),
                notebook_uri=uri_of(req.notebook_artifact) if req.notebook_artifact else None,
                user=user,
            )
            session.add(report)
            session.flush()
            return describe(report)

    def list_reports(self, query: ListReportsQuery) -> ReportList:
        with self.db.session() as session:
            stmt = select(Report).order_by(Report.created_at.desc(), Report.id.desc())
            if query.run_id is not None:
                # A sweep's reports are made by runs of their own: match the parent too.
                children = select(Run.id).where(Run.parent_id == query.run_id)
                stmt = stmt.where(
                    (Report.run_id == query.run_id)
                    | (Report.run_id.in_(children))
                    | (Report.params["sweep"].as_string() == str(query.run_id))
                )
            reports = session.scalars(stmt.limit(query.limit)).all()
            return ReportList(reports=[describe(r) for r in reports])

    def get(self, report_id: int) -> DescribeReport:
        with self.db.session() as session:
            return describe(self._load(session, report_id))

    def file_uri(self, report_id: int, which: str) -> str:
        """The stored URI of a report's ``html`` or ``notebook``."""
        with self.db.session() as session:
            report = self._load(session, report_id)
            uri = report.html_uri if which == "html" else report.notebook_uri
            if uri is None:
                raise NotFound(f"report {report_id} has no {which}")
            return uri

    @staticmethod
    def _load(session, report_id: int) -> Report:
        report = session.get(Report, report_id)
        if report is None:
            raise NotFound(f"no report {report_id}; GET /labrun/api/v1/reports lists them")
        return report
