"""The JSON shapes of the REST API, shared by the server and the client.

Request models are named by verb (``CreateRun``, ``LogMetrics``), response models by what
they describe (``DescribeRun``). Request models forbid unknown fields, so a misspelt field
is a 400 that names it instead of being silently dropped.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


class Request(BaseModel):
    """Base of request bodies and queries: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    """Base of response bodies: tolerant, so an older client reads a newer server."""

    model_config = ConfigDict(extra="ignore")


class RunStatus(str, Enum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    lost = "lost"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({RunStatus.completed, RunStatus.failed, RunStatus.cancelled})


class RunKind(str, Enum):
    script = "script"
    cell = "cell"
    notebook = "notebook"
    session = "session"
    sweep = "sweep"


class ErrorBody(Response):
    message: str
    code: str


class ServerVersion(Response):
    version: str
    api: int


# --- runs -----------------------------------------------------------------------------


class CreateRun(Request):
    project: str = Field("default", pattern=NAME_PATTERN)
    name: str | None = Field(None, max_length=256)
    kind: RunKind = RunKind.script
    status: Literal[RunStatus.queued, RunStatus.running] = RunStatus.running
    params: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    queue: str | None = None
    requested_gpus: int = Field(0, ge=0, le=64)
    source: str | None = None
    notebook: str | None = None
    environment: dict[str, Any] = Field(default_factory=dict)
    parent_id: int | None = None
    key: str | None = Field(
        None,
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="a unique key chosen by the client: creating a run with a key that "
        "exists returns that run, and GET runs?key= finds it",
    )


class UpdateRun(Request):
    name: str | None = Field(None, max_length=256)
    status: RunStatus | None = None
    tags: list[str] | None = None
    worker: str | None = None
    environment: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    devices: list[int] | None = Field(None, description="GPU indices it holds on its worker")
    started_at: datetime | None = Field(
        None, description="when a queued run started: for a start reported with its end"
    )


class RunSummary(Response):
    id: int
    project: str
    name: str | None
    kind: RunKind
    status: RunStatus
    user: str
    queue: str | None
    requested_gpus: int
    worker: str | None
    attempt: int
    parent_id: int | None
    tags: list[str]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration: float | None = Field(None, description="seconds from start to end (or to now)")
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="latest value of each metric"
    )


class DescribeRun(RunSummary):
    source: str | None = None
    notebook: str | None = None
    environment: dict[str, Any] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    devices: list[int] | None = Field(None, description="GPU indices held on its worker")


class RunTransitionOut(Response):
    status: RunStatus
    time: datetime
    message: str | None = None


class TransitionList(Response):
    transitions: list[RunTransitionOut]


class ListRunsQuery(Request):
    project: str | None = None
    status: list[RunStatus] | None = None
    user: str | None = None
    kind: RunKind | None = None
    parent_id: int | None = None
    key: str | None = Field(None, description="the key the run was created with")
    q: str | None = Field(None, description="text to find in run names")
    sort: str = Field(
        "-created_at",
        description="a column (created_at, name, status, user, duration, id), "
        "params.NAME or metrics.NAME; a leading '-' sorts descending",
    )
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=1000)
    spark: str | None = Field(
        None, description="a metric whose recent values come back per run as sparklines"
    )


class RunList(Response):
    runs: list[RunSummary]
    total: int
    offset: int
    limit: int
    sparklines: dict[int, list[float | None]] = Field(
        default_factory=dict,
        description="with `spark`: each run's recent values of that metric, by run id",
    )


# --- params, metrics, logs -------------------------------------------------------------


class LogParams(Request):
    params: dict[str, Any]


class MetricPoint(Request):
    key: str = Field(min_length=1, max_length=256)
    value: float | None
    step: int = 0
    time: float | None = Field(None, description="seconds since the epoch; default: receipt")


MetricKey = Annotated[str, Field(min_length=1, max_length=256)]
# [key, value, step, time]: the compact form of a point, as labrun's own client sends it.
MetricRow = tuple[MetricKey, float | None, int, float | None]


class LogMetrics(Request):
    batch_id: str | None = Field(
        None,
        max_length=64,
        description="client-chosen id; a batch sent twice (a retry) is stored once",
    )
    points: list[MetricPoint] = Field(
        default_factory=list, description="points as objects: {key, value, step, time}"
    )
    rows: list[MetricRow] = Field(
        default_factory=list,
        description="points as [key, value, step, time] arrays: the same, smaller and "
        "faster to parse (time may be null: the server's receipt time)",
    )

    @model_validator(mode="after")
    def _some_points(self) -> LogMetrics:
        if not self.points and not self.rows:
            raise ValueError("a batch needs 'points' or 'rows'")
        return self


class MetricsIngested(Response):
    accepted: int
    duplicate: bool = False


class MetricsQuery(Request):
    keys: list[str] | None = None
    step_min: int | None = None
    step_max: int | None = None
    max_points: int | None = Field(
        None, ge=2, description="downsample each series to at most this many points"
    )


class MetricSeries(Response):
    key: str
    steps: list[int]
    values: list[float | None]
    times: list[float]


class RunMetrics(Response):
    run_id: int
    series: list[MetricSeries]


class LogEntryIn(Request):
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    text: str


class AppendLogs(Request):
    entries: list[LogEntryIn]
    attempt: int | None = Field(
        None,
        ge=1,
        description="the attempt of the run that wrote these lines (a worker says which it "
        "runs); default: the run's latest",
    )


class LogEntry(Response):
    offset: int
    stream: str
    text: str
    time: datetime
    attempt: int | None = Field(
        None, description="the attempt that wrote it (none for lines older than attempts)"
    )


class LogTail(Response):
    entries: list[LogEntry]
    next_offset: int


class LogTailQuery(Request):
    offset: int = Field(0, ge=0, description="return entries after this offset")
    limit: int = Field(1000, ge=1, le=10000)
    attempt: int | None = Field(
        None,
        ge=1,
        description="only the lines of this attempt (a job re-queued after its "
        "worker died runs again as attempt 2)",
    )


# --- artifacts -------------------------------------------------------------------------


class DescribeArtifact(Response):
    name: str
    size: int
    sha256: str
    content_type: str
    kind: str
    uri: str
    created_at: datetime


class ArtifactList(Response):
    artifacts: list[DescribeArtifact]


# --- datasets --------------------------------------------------------------------------


class CreateDataset(Request):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""


class CreateDatasetVersion(Request):
    content_hash: str = Field(min_length=8, max_length=128)
    size: int = Field(ge=0)
    file_count: int = Field(ge=0)
    source_path: str | None = None
    manifest: dict[str, Any] = Field(default_factory=dict)
    version: str | None = Field(
        None, description="expected version: a 409 when the content is not that version"
    )


class DescribeDatasetVersion(Response):
    dataset: str
    version: str
    content_hash: str
    size: int
    file_count: int
    source_path: str | None
    created_at: datetime
    created: bool = Field(False, description="true when this request made the version")
    runs: list[int] = Field(default_factory=list)


class DescribeDataset(Response):
    name: str
    description: str
    created_at: datetime
    versions: list[DescribeDatasetVersion]


class DatasetList(Response):
    datasets: list[DescribeDataset]


class LinkDataset(Request):
    dataset: str
    version: str
    role: Literal["input", "output"] = "input"


# --- queues, workers, GPUs -------------------------------------------------------------


class CreateQueue(Request):
    name: str = Field(pattern=NAME_PATTERN)
    priority: int = 0
    max_gpus_per_user: int | None = Field(None, ge=0)
    description: str = ""


class DescribeQueue(Response):
    name: str
    priority: int
    max_gpus_per_user: int | None
    description: str
    queued: int = 0
    running: int = 0


class QueueList(Response):
    queues: list[DescribeQueue]


class GpuInfo(Request):
    index: int = Field(ge=0)
    name: str = ""
    uuid: str = ""
    memory_total: int = Field(0, ge=0, description="bytes")


class RegisterWorker(Request):
    host: str = ""
    address: str = ""
    resources: dict[str, float] = Field(default_factory=dict)
    gpus: list[GpuInfo] = Field(default_factory=list)
    status: Literal["running", "closing", "closed"] = "running"
    runs: list[int] = Field(
        default_factory=list, description="the runs this worker is executing right now"
    )
    nthreads: int = Field(1, ge=0, description="jobs the worker runs at once")


class DescribeWorker(Response):
    id: str
    host: str
    address: str
    resources: dict[str, float]
    gpus: list[dict[str, Any]]
    status: str
    alive: bool
    started_at: datetime
    last_heartbeat: datetime
    runs: list[int] = Field(default_factory=list)
    nthreads: int = 1


class WorkerList(Response):
    workers: list[DescribeWorker]


class GpuSampleIn(Request):
    worker_id: str
    gpu_index: int = Field(ge=0)
    time: float
    utilization: float | None = Field(None, ge=0, le=100)
    memory_used: int | None = Field(None, ge=0)
    memory_total: int | None = Field(None, ge=0)
    temperature: float | None = None
    power: float | None = Field(None, description="watts")
    run_id: int | None = None


class HostSampleIn(Request):
    worker_id: str
    time: float
    cpu_percent: float | None = None
    ram_used: int | None = None
    ram_total: int | None = None
    net_sent: int | None = None
    net_recv: int | None = None


class IngestSamples(Request):
    gpus: list[GpuSampleIn] = Field(default_factory=list)
    hosts: list[HostSampleIn] = Field(default_factory=list)


class DescribeGpu(Response):
    worker_id: str
    index: int
    name: str
    time: float | None
    utilization: float | None
    memory_used: int | None
    memory_total: int | None
    temperature: float | None
    power: float | None
    run_id: int | None
    user: str | None
    idle: bool


class GpuList(Response):
    gpus: list[DescribeGpu]


class GpuHistoryQuery(Request):
    worker_id: str | None = None
    gpu_index: int | None = None
    run_id: int | None = None
    since: float | None = None
    until: float | None = None
    max_points: int = Field(600, ge=2, le=100000)


class GpuHistory(Response):
    samples: list[GpuSampleIn]


# --- projects, comparison, tokens ------------------------------------------------------


class DescribeProject(Response):
    name: str
    created_at: datetime
    runs: int


class ProjectList(Response):
    projects: list[DescribeProject]


class CompareQuery(Request):
    runs: list[int] = Field(min_length=1, max_length=100)


class CompareRow(Response):
    key: str
    values: list[Any]
    differs: bool


class Comparison(Response):
    runs: list[RunSummary]
    params: list[CompareRow]
    metrics: list[CompareRow]


class CreateToken(Request):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["worker", "kernel"] = "worker"


class IssuedToken(Response):
    token: str
    name: str
    user: str


# --- jobs ----------------------------------------------------------------------------


class CodeState(Request):
    """A notebook's code where it was submitted (``labrun.environment.code_state``)."""

    notebook: str | None = Field(None, description="the notebook's absolute path")
    submit_host: str | None = Field(None, description="the machine it was submitted from")
    git: dict[str, Any] | None = Field(
        None,
        description="root, commit, branch, dirty, the uncommitted diff and its digest, "
        "untracked files; null outside a git repository",
    )
    local_modules: dict[str, Any] = Field(
        default_factory=dict,
        description="the local modules the notebook imports: path, sha256, and the source of "
        "those git does not track",
    )
    capture_error: str | None = Field(None, description="why part of it could not be read")


class JobOptions(Request):
    """What a notebook job asks for, shared by single jobs and sweeps."""

    notebook: str = Field(
        min_length=1, max_length=1024, description="the notebook's path, as the user named it"
    )
    content: dict[str, Any] = Field(description="the notebook itself (nbformat 4 JSON)")
    gpus: int = Field(0, ge=0, le=64)
    queue: str = Field("default", pattern=NAME_PATTERN)
    project: str = Field("default", pattern=NAME_PATTERN)
    name: str | None = Field(None, max_length=256)
    tags: list[str] = Field(default_factory=list)
    cwd: str | None = Field(
        None, description="working directory for the notebook, used where a worker has it"
    )
    timeout: float | None = Field(None, gt=0, description="seconds a cell may run")
    environment: CodeState | None = Field(
        None,
        description="the notebook's git state and local modules, read where it was "
        "submitted; without it, the server reads them from the notebook under its root dir",
    )


class ReportOptions(Request):
    """A job that is a report: its notebook is rendered to HTML and recorded as a report."""

    name: str | None = Field(None, max_length=256, description="default: the run's name")
    code: bool = Field(False, description="keep the code cells in the HTML")


class SubmitJob(JobOptions):
    parameters: dict[str, Any] = Field(default_factory=dict)
    report: ReportOptions | None = Field(None, description="record the result as a report")


class SweepReport(Request):
    """The report notebook a sweep runs once all its runs ended, with ``sweep`` set."""

    notebook: str = Field(min_length=1, max_length=1024)
    content: dict[str, Any] = Field(description="the report notebook (nbformat 4 JSON)")
    code: bool = False
    environment: CodeState | None = Field(
        None, description="the report notebook's code state, as a job's `environment`"
    )


class SubmitSweep(JobOptions):
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="values every run of the sweep shares"
    )
    grid: dict[str, list[Any]] = Field(
        min_length=1, description="each parameter's values; the sweep runs their combinations"
    )
    samples: int | None = Field(
        None, ge=1, description="run this many random combinations instead of all"
    )
    seed: int | None = None
    report: SweepReport | None = Field(
        None, description="a report notebook to run when the sweep ends (it gets `sweep`)"
    )


class DescribeSweep(Response):
    sweep: DescribeRun
    runs: list[RunSummary]
    counts: dict[str, int] = Field(default_factory=dict, description="runs by status")
    report_run: int | None = Field(
        None, description="the run making the sweep's report, once every run ended"
    )


class ClaimRun(Request):
    """A worker about to execute a run: granted only for the attempt the server dispatched."""

    attempt: int = Field(ge=1)
    worker: str
    devices: list[int] = Field(default_factory=list)
    environment: dict[str, Any] = Field(
        default_factory=dict,
        description="what the worker records of the run's machine (Python, OS, packages, "
        "torch and CUDA, the GPUs it holds), merged into the run's environment",
    )


class RerunRun(Request):
    """How to run a recorded run again."""

    strict: bool = Field(
        False,
        description="fail the re-run, before it runs anything, if the worker's packages "
        "differ from the original's record (every difference goes to its log either way)",
    )


class PoolWorker(Response):
    id: str
    address: str
    host: str
    nthreads: int
    resources: dict[str, float]
    gpus: list[DescribeGpu]
    runs: list[RunSummary]
    alive: bool


class PoolStatus(Response):
    state: Literal["starting", "ready", "error", "disabled"]
    scheduler: str | None = None
    message: str | None = None
    dashboard: str | None = None
    workers: list[PoolWorker] = Field(default_factory=list)
    queued: int = 0
    running: int = 0


class Identity(Response):
    user: str = Field(description="the name runs and jobs are recorded under")
    admin: bool = Field(description="may cancel anyone's jobs (c.LabRun.admins)")


# --- reports ---------------------------------------------------------------------------


class CreateReport(Request):
    """A report notebook that a run executed and rendered, recorded for the Reports panel."""

    name: str = Field(min_length=1, max_length=256)
    notebook: str = Field(min_length=1, max_length=1024, description="the report notebook's path")
    params: dict[str, Any] = Field(default_factory=dict)
    run_id: int = Field(description="the run that executed the report")
    html_artifact: str = Field(description="the name of that run's rendered HTML artifact")
    notebook_artifact: str | None = Field(
        None, description="the name of that run's executed notebook artifact"
    )


class DescribeReport(Response):
    id: int
    name: str
    notebook: str
    params: dict[str, Any]
    run_id: int | None
    user: str
    created_at: datetime
    has_html: bool
    has_notebook: bool


class ReportList(Response):
    reports: list[DescribeReport]


class ListReportsQuery(Request):
    run_id: int | None = Field(None, description="reports of this run (or of this sweep)")
    limit: int = Field(200, ge=1, le=1000)
