"""Every route of the REST API, in one table: the server registers it, OpenAPI describes it."""

from __future__ import annotations

from typing import Any

from .handlers.audit import AuditHandler
from .handlers.batches import RunClaimsHandler, RunUpdatesHandler
from .handlers.catalog import (
    CompareHandler,
    DatasetHandler,
    DatasetsHandler,
    DatasetVersionHandler,
    DatasetVersionsHandler,
    ProjectsHandler,
)
from .handlers.grants import GrantsHandler, GrantsReleaseHandler
from .handlers.jobs import (
    JobsHandler,
    PoolHandler,
    RunClaimHandler,
    RunRerunHandler,
    SweepHandler,
    SweepsHandler,
)
from .handlers.meta import (
    EventsHandler,
    IdentityHandler,
    OpenAPIHandler,
    TokenHandler,
    TokensHandler,
    VersionHandler,
)
from .handlers.params import ParamsCheckHandler
from .handlers.pool import (
    GpuHistoryHandler,
    GpusHandler,
    QueueHandler,
    QueuesHandler,
    SamplesHandler,
    WorkerHandler,
    WorkersHandler,
)
from .handlers.reports import (
    ReportHandler,
    ReportHtmlHandler,
    ReportNotebookHandler,
    ReportsHandler,
)
from .handlers.runs import (
    RunArtifactHandler,
    RunArtifactsHandler,
    RunCancelHandler,
    RunDatasetsHandler,
    RunHandler,
    RunLogsHandler,
    RunMetricsHandler,
    RunParamsHandler,
    RunsHandler,
    RunTransitionsHandler,
)

# (path relative to /labrun/api/v1, handler). Path parameters are named as in
# handlers.base.PATH_PARAMS, which gives each its pattern and type.
ROUTES: list[tuple[str, Any]] = [
    ("/version", VersionHandler),
    ("/openapi.json", OpenAPIHandler),
    ("/tokens", TokensHandler),
    ("/tokens/{token_id}", TokenHandler),
    ("/users/me", IdentityHandler),
    ("/events", EventsHandler),
    ("/projects", ProjectsHandler),
    ("/runs", RunsHandler),
    ("/runs/claims", RunClaimsHandler),
    ("/runs/updates", RunUpdatesHandler),
    ("/runs/{run_id}", RunHandler),
    ("/runs/{run_id}/cancel", RunCancelHandler),
    ("/runs/{run_id}/rerun", RunRerunHandler),
    ("/runs/{run_id}/claim", RunClaimHandler),
    ("/runs/{run_id}/transitions", RunTransitionsHandler),
    ("/runs/{run_id}/params", RunParamsHandler),
    ("/runs/{run_id}/metrics", RunMetricsHandler),
    ("/runs/{run_id}/logs", RunLogsHandler),
    ("/runs/{run_id}/artifacts", RunArtifactsHandler),
    ("/runs/{run_id}/artifacts/{artifact}", RunArtifactHandler),
    ("/runs/{run_id}/datasets", RunDatasetsHandler),
    ("/compare", CompareHandler),
    ("/datasets", DatasetsHandler),
    ("/datasets/{name}", DatasetHandler),
    ("/datasets/{name}/versions", DatasetVersionsHandler),
    ("/datasets/{name}/versions/{version}", DatasetVersionHandler),
    ("/jobs", JobsHandler),
    ("/sweeps", SweepsHandler),
    ("/params/check", ParamsCheckHandler),
    ("/sweeps/{run_id}", SweepHandler),
    ("/pool", PoolHandler),
    ("/grants", GrantsHandler),
    ("/grants/release", GrantsReleaseHandler),
    ("/queues", QueuesHandler),
    ("/queues/{name}", QueueHandler),
    ("/workers", WorkersHandler),
    ("/workers/{worker_id}", WorkerHandler),
    ("/gpus", GpusHandler),
    ("/gpus/history", GpuHistoryHandler),
    ("/gpus/samples", SamplesHandler),
    ("/reports", ReportsHandler),
    ("/reports/{report_id}", ReportHandler),
    ("/reports/{report_id}/html", ReportHtmlHandler),
    ("/reports/{report_id}/notebook", ReportNotebookHandler),
    ("/audit", AuditHandler),
]
