"""Reports: list them, record one, and serve its HTML to a browser without its scripts."""

from __future__ import annotations

from labrun.models import CreateReport, DescribeReport, ListReportsQuery, ReportList

from .base import LabrunHandler, operation

# A report is static HTML (nbconvert output with inline images and styles). Nothing in it
# may run: no scripts, no plugins, no requests out, no forms; only its own styles and
# images, and framing by JupyterLab itself.
REPORT_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; script-src 'none'; object-src 'none'; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'self'"
)


class ReportsHandler(LabrunHandler):
    @operation("List reports, newest first", query=ListReportsQuery, response=ReportList)
    async def get(self, query: ListReportsQuery) -> ReportList:
        return await self.call(self.store.reports.list_reports, query)

    @operation(
        "Record a report a run executed and rendered (by whoever may change that run)",
        body=CreateReport,
        response=DescribeReport,
        status=201,
        run_field="run_id",
        action="report.create",
    )
    async def post(self, body: CreateReport) -> DescribeReport:
        report = await self.call(self.store.reports.create, body, self.username)
        self.events.publish("report.created", report)
        return report


class ReportHandler(LabrunHandler):
    @operation("Describe a report", response=DescribeReport)
    async def get(self, report_id: int) -> DescribeReport:
        return await self.call(self.store.reports.get, report_id)


class ReportFileHandler(LabrunHandler):
    """Base of the two files a report has: its ``html`` and its executed ``notebook``."""

    which = "html"
    content_type = "text/html; charset=utf-8"

    async def _send(self, report_id: int) -> None:
        uri = await self.call(self.store.reports.file_uri, report_id, self.which)
        self.set_header("Content-Security-Policy", REPORT_CSP)
        await self.send_file(uri, self.content_type)


class ReportHtmlHandler(ReportFileHandler):
    @operation(
        "The rendered report, served with a content security policy that blocks its scripts",
        response_content="text/html",
    )
    async def get(self, report_id: int) -> None:
        await self._send(report_id)


class ReportNotebookHandler(ReportFileHandler):
    which = "notebook"
    content_type = "application/x-ipynb+json"

    @operation("The executed report notebook", response_content="application/x-ipynb+json")
    async def get(self, report_id: int) -> None:
        await self._send(report_id)
