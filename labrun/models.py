"""The JSON shapes of the REST API, shared by the server and the client.

Request models are named by verb (``CreateRun``, ``LogMetrics``), response models by what
they describe (``DescribeRun``). Request models forbid unknown fields, so a misspelt field
is a 400 that names it instead of being silently dropped.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"

# The store keeps integers in 32- and 64-bit columns: a request with a larger one is a 400
# that names the field, not an overflow in the database driver.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Count32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
Count64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
Id = Annotated[int, Field(ge=0, le=INT64_MAX)]

# How responses write the floats JSON has no number for (JSON.parse reads these strings,
# and so does pydantic).
NON_FINITE = ("NaN", "Infinity", "-Infinity")
_FLOAT_OUT = {"anyOf": [{"type": "number"}, {"type": "string", "enum": list(NON_FINITE)}]}

# A metric value in a request: a number, or the JSON constants NaN, Infinity, -Infinity
# (as Python's json.dumps writes them). Strict: a string ("nan", "1.5") is refused, never
# converted.
MetricValueIn = Annotated[
    float | None,
    Field(
        strict=True,
        allow_inf_nan=True,
        description="a number, null, or the constants NaN, Infinity and -Infinity",
    ),
]
# A parameter's name, as the store keeps it.
ParamName = Annotated[str, Field(min_length=1, max_length=256)]

# A metric value in a response: NaN and +-Infinity come as the strings in NON_FINITE.
MetricValue = Annotated[float, WithJsonSchema(_FLOAT_OUT)]


class Request(BaseModel):
    """Base of request bodies and queries: unknown fields are an error.

    Floats must be finite unless a field says otherwise (metric values).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)
    # What a 413 (a body over the server's limit) tells the sender to do.
    too_large_hint: ClassVar[str] = "send it in smaller parts"


class Response(BaseModel):
    """Base of response bodies: tolerant, so an older client reads a newer server.

    Non-finite floats are written as the strings "NaN", "Infinity" and "-Infinity", and
    read back as floats.
    """

    # Every field is in every response (defaults included), so the OpenAPI document (the
    # serialization schema) marks them all required: generated clients need no `?`.
    model_config = ConfigDict(
        extra="ignore",
        ser_json_inf_nan="strings",
        defer_build=True,
        json_schema_serialization_defaults_required=True,
    )


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
    params: dict[ParamName, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    queue: str | None = None
    requested_gpus: int = Field(0, ge=0, le=64)
    source: str | None = None
    notebook: str | None = Field(None, max_length=1024)
    environment: dict[str, Any] = Field(default_factory=dict)
    parent_id: Id | None = None
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
    worker: str | None = Field(None, max_length=256)
    environment: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    devices: list[Count32] | None = Field(None, description="GPU indices it holds on its worker")
    started_at: datetime | None = Field(
        None, description="when a queued run started: for a start reported with its end"
    )
    log: list[LogEntryIn] | None = Field(
        None,
        description="log entries to append with this change; with a status, only when the "
        "run takes that status now (so a repeated end record appends nothing twice)",
    )
    attempt: int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="the dispatched attempt this record comes from (a worker's): refused "
        "with 409 once that attempt was lost, so a cut-off worker's late record does not "
        "overwrite the next attempt's",
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
    metrics: dict[str, MetricValue | None] = Field(
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


# What runs sort by, besides params.NAME and metrics.NAME.
RUN_SORT_COLUMNS = (
    "created_at",
    "started_at",
    "ended_at",
    "duration",
    "name",
    "status",
    "user",
    "queue",
    "kind",
    "project",
    "id",
)
RUN_SORT_PATTERN = rf"^[-+]?(?:{'|'.join(RUN_SORT_COLUMNS)}|params\..+|metrics\..+)$"


class ListRunsQuery(Request):
    project: str | None = None
    status: list[RunStatus] | None = None
    user: str | None = None
    kind: RunKind | None = None
    parent_id: Id | None = None
    key: str | None = Field(None, description="the key the run was created with")
    q: str | None = Field(None, description="text to find in run names")
    sort: str = Field(
        "-created_at",
        description=f"a column ({', '.join(RUN_SORT_COLUMNS)}), params.NAME or metrics.NAME; "
        "a leading '-' sorts descending",
        json_schema_extra={"pattern": RUN_SORT_PATTERN},
    )
    offset: int = Field(0, ge=0, le=INT64_MAX)
    cursor: str | None = Field(
        None,
        min_length=1,
        description="the next_cursor of the previous page: the page after it, found by "
        "the sort's index instead of skipping offset rows (then leave offset out)",
    )
    limit: int = Field(50, ge=1, le=1000)
    spark: str | None = Field(
        None, description="a metric whose recent values come back per run as sparklines"
    )

    @field_validator("sort")
    @classmethod
    def _sortable(cls, sort: str) -> str:
        if re.fullmatch(RUN_SORT_PATTERN, sort) is None:
            raise ValueError(
                f"cannot sort by {sort!r}; use one of {', '.join(sorted(RUN_SORT_COLUMNS))}, "
                "params.NAME or metrics.NAME, with a leading '-' for descending"
            )
        return sort


class RunList(Response):
    runs: list[RunSummary]
    total: int
    offset: int = Field(description="the position of the page's first run")
    limit: int
    next_cursor: str | None = Field(
        None,
        description="pass as cursor (same filters and sort) for the next page; null "
        "after the last page",
    )
    sparklines: dict[int, list[MetricValue | None]] = Field(
        default_factory=dict,
        description="with `spark`: each run's recent values of that metric, by run id",
    )


# --- params, metrics, logs -------------------------------------------------------------


class LogParams(Request):
    params: dict[ParamName, Any]


class MetricPoint(Request):
    # The client writes NaN and the infinities as the JSON constants the server reads.
    model_config = ConfigDict(ser_json_inf_nan="constants")

    key: str = Field(min_length=1, max_length=256)
    value: MetricValueIn
    step: Int64 = 0
    time: float | None = Field(None, description="seconds since the epoch; default: receipt")


MetricKey = Annotated[str, Field(min_length=1, max_length=256)]
# [key, value, step, time]: the compact form of a point, as labrun's own client sends it.
MetricRow = tuple[MetricKey, MetricValueIn, Int64, float | None]


class LogMetrics(Request):
    too_large_hint: ClassVar[str] = "send the points in smaller batches"
    # A batch without a point is refused; say so in the OpenAPI document too.
    model_config = ConfigDict(
        ser_json_inf_nan="constants",
        json_schema_extra={
            "anyOf": [
                {"required": ["points"], "properties": {"points": {"minItems": 1}}},
                {"required": ["rows"], "properties": {"rows": {"minItems": 1}}},
            ]
        },
    )

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

    @staticmethod
    def name_item(raw: Any, loc: tuple[Any, ...]) -> str | None:
        """The point an error is in, by its key and step: the 400 names it."""
        if len(loc) < 2 or loc[0] not in ("points", "rows"):
            return None
        try:
            item = raw[loc[0]][loc[1]]
            key, step = (item["key"], item.get("step", 0)) if loc[0] == "points" else item[::2]
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            return None
        key = repr(key) if len(repr(key)) <= 40 else repr(key)[:36] + "...'"
        return f"the point {key} at step {step!r}"


class MetricsIngested(Response):
    accepted: int
    duplicate: bool = False


# Points per series a metric read returns unless it asks for more: enough for any chart.
DEFAULT_MAX_POINTS = 1000


class MetricsQuery(Request):
    keys: list[str] | None = None
    step_min: Int64 | None = None
    step_max: Int64 | None = None
    max_points: Annotated[int, Field(ge=2, le=INT64_MAX)] | Literal["all"] = Field(
        DEFAULT_MAX_POINTS,
        description="downsample each series to at most this many points (the first, the "
        "last and each stretch's extremes); 'all': every point",
    )


class MetricSeries(Response):
    key: str
    steps: list[int]
    values: list[MetricValue | None]
    times: list[float]


class RunMetrics(Response):
    run_id: int
    series: list[MetricSeries]


class LogEntryIn(Request):
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    text: str

    @field_validator("text")
    @classmethod
    def _no_nul(cls, text: str) -> str:
        # Kept whatever the program printed, in every store: PostgreSQL keeps no NUL.
        return text.replace("\x00", "\ufffd") if "\x00" in text else text


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
    offset: int = Field(0, ge=0, le=INT64_MAX, description="return entries after this offset")
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
    created_at: datetime


class ArtifactList(Response):
    artifacts: list[DescribeArtifact]


# --- datasets --------------------------------------------------------------------------


class CreateDataset(Request):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""


class CreateDatasetVersion(Request):
    content_hash: str = Field(min_length=8, max_length=128)
    size: Count64
    file_count: Count32
    source_path: str | None = Field(None, max_length=2048)
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
    priority: Int32 = 0
    max_gpus_per_user: Count32 | None = None
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
    index: Count32
    name: str = ""
    uuid: str = ""
    memory_total: Count64 = Field(0, description="bytes")


class AttemptRef(Request):
    """One dispatched attempt of a job."""

    run_id: Id
    attempt: int = Field(ge=1, le=INT32_MAX)


class RegisterWorker(Request):
    host: str = Field("", max_length=256)
    address: str = Field("", max_length=256)
    resources: dict[str, float] = Field(default_factory=dict)
    gpus: list[GpuInfo] = Field(default_factory=list)
    status: Literal["running", "closing", "closed"] = "running"
    runs: list[Id] = Field(
        default_factory=list, description="the runs this worker is executing right now"
    )
    nthreads: Count32 = Field(1, description="jobs the worker runs at once")
    abandoned: list[AttemptRef] = Field(
        default_factory=list,
        max_length=10_000,
        description="attempts the worker gave up, cut off from the server: those the server "
        "still counts as running there are lost (and queued again)",
    )


class HostTelemetry(Response):
    """A worker's latest host sample: what a pool without GPUs has to show."""

    time: float
    cpu_percent: float | None = None
    ram_used: int | None = Field(None, description="bytes")
    ram_total: int | None = Field(None, description="bytes")


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
    telemetry: HostTelemetry | None = Field(
        None, description="its latest CPU and memory sample (GET workers; null before one)"
    )


class WorkerList(Response):
    workers: list[DescribeWorker]


class GpuSampleIn(Request):
    worker_id: str = Field(max_length=256)
    gpu_index: Count32
    time: float
    utilization: float | None = Field(None, ge=0, le=100)
    memory_used: Count64 | None = None
    memory_total: Count64 | None = None
    temperature: float | None = None
    power: float | None = Field(None, description="watts")
    run_id: Id | None = None


class HostSampleIn(Request):
    worker_id: str = Field(max_length=256)
    time: float
    cpu_percent: float | None = None
    ram_used: Count64 | None = None
    ram_total: Count64 | None = None
    net_sent: Count64 | None = None
    net_recv: Count64 | None = None


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
    gpu_index: Int32 | None = None
    run_id: Id | None = None
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
    runs: list[Id] = Field(min_length=1, max_length=100)


class CompareRow(Response):
    key: str
    values: list[Any]
    differs: bool


class MetricCompareRow(CompareRow):
    values: list[MetricValue | None]


class Comparison(Response):
    runs: list[RunSummary]
    params: list[CompareRow]
    metrics: list[MetricCompareRow]


# --- tokens ----------------------------------------------------------------------------


class CreateToken(Request):
    """A token acting for the caller: for all they may do, or scoped to one run."""

    name: str = Field(pattern=NAME_PATTERN)
    run: int | None = Field(
        None, description="scope it to this run (and the runs made under it): a job's, a kernel's"
    )
    lifetime: float | None = Field(
        None,
        gt=0,
        description="seconds until it expires (default and most: c.LabRun.token_lifetime)",
    )


class DescribeToken(Response):
    id: str
    name: str
    user: str
    scope: Literal["user", "run", "pool"] = Field(
        description="user: all the user may do; run: one run and those made under it; pool: "
        "a server's own pool"
    )
    run_id: int | None = None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    status: Literal["active", "expired", "revoked"]


class IssuedToken(DescribeToken):
    token: str = Field(description="shown once: the server keeps only its id")


class TokenList(Response):
    tokens: list[DescribeToken]


class ListTokensQuery(Request):
    all: bool = Field(False, description="also the expired and revoked tokens")
    limit: int = Field(200, ge=1, le=1000)


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

    too_large_hint: ClassVar[str] = "clear the notebook's outputs (the job runs it anew)"

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
    priority: Int32 = Field(
        0,
        description="among the submitter's own queued jobs in the queue, a higher one starts "
        "first; it never overtakes another user's job (fair share decides between users)",
    )
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


class CheckParams(Request):
    """Parameters as typed into a form, for the server to read (and check) as a job would."""

    text: str = Field(
        max_length=1_000_000,
        description="`name = value` lines, as a parameters cell writes them; each value read "
        "as `labrun submit -p` reads it (true/True, null/None, numbers, quoted strings, lists)",
    )
    content: dict[str, Any] | None = Field(
        None,
        description="the notebook (nbformat 4 JSON): the values are also checked against its "
        "parameters cell, as a job submission checks them",
    )


class CheckedParams(Response):
    parameters: dict[str, Any] = Field(description="the values read, by name")


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
        None, ge=1, le=INT64_MAX, description="run this many random combinations instead of all"
    )
    seed: Int64 | None = None
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

    attempt: int = Field(ge=1, le=INT32_MAX)
    worker: str = Field(max_length=256)
    devices: list[Count32] = Field(default_factory=list)
    environment: dict[str, Any] = Field(
        default_factory=dict,
        description="what the worker records of the run's machine (Python, OS, packages, "
        "torch and CUDA, the GPUs it holds), merged into the run's environment",
    )


# A worker sends at most this many claims or updates in one request.
MOST_PER_BATCH = 500


class ClaimItem(ClaimRun):
    run_id: int = Field(ge=0, le=INT64_MAX)


class ClaimRuns(Request):
    """Several claims of one worker at once: each is granted or refused on its own."""

    claims: list[ClaimItem] = Field(min_length=1, max_length=MOST_PER_BATCH)


class UpdateItem(UpdateRun):
    run_id: int = Field(ge=0, le=INT64_MAX)


class UpdateRuns(Request):
    """Several runs' updates at once (a worker's ended jobs): each applied or refused on
    its own, as ``PATCH runs/{id}`` would."""

    updates: list[UpdateItem] = Field(min_length=1, max_length=MOST_PER_BATCH)


class ItemOutcome(Response):
    """What became of one claim or update of a batch: the run's status after it, or the
    error ``PATCH``/``POST`` of that run alone would have answered."""

    run_id: int
    status: RunStatus | None = None
    error: ErrorBody | None = None
    error_status: int | None = Field(None, description="the HTTP status of that error")


class BatchOutcome(Response):
    results: list[ItemOutcome] = Field(description="one per item, in the request's order")


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


class Dispatching(Response):
    """The scheduler of record: the one server of the store that dispatches jobs."""

    server: str | None = Field(description="the server's id: host:pid:start/n")
    user: str | None = Field(description="the user the server runs for")
    url: str | None = Field(description="where the server's REST API is")
    since: float = Field(description="when it took over (Unix seconds)")
    this_server: bool = Field(description="whether it is the server that answered")


class PoolStatus(Response):
    state: Literal["starting", "ready", "error", "disabled"]
    scheduler: str | None = None
    message: str | None = None
    dashboard: str | None = None
    workers: list[PoolWorker] = Field(default_factory=list)
    queued: int = 0
    running: int = 0
    dispatcher: Dispatching | None = Field(
        default=None, description="the server that dispatches; None while no server does"
    )


class GrantStatus(str, Enum):
    waiting = "waiting"
    granted = "granted"
    released = "released"


RUN_KEY_PATTERN = r"^[A-Za-z0-9_.-]{8,64}$"  # as CreateRun.key


class RequestGrant(Request):
    """GPUs for a ``%%mlrun`` cell or session, asked of the scheduler of record: the answer
    comes once they are granted, or after ``wait`` seconds still waiting (ask again)."""

    key: str = Field(pattern=RUN_KEY_PATTERN, description="the cell's or session's run key")
    gpus: int = Field(ge=1, le=64)
    kind: Literal["cell", "session"] = "cell"
    queue: str = Field("default", pattern=NAME_PATTERN, description="whose rules apply")
    client: str | None = Field(
        None, max_length=128, description="the kernel's Dask client id: released once it is gone"
    )
    release: list[Annotated[str, Field(pattern=RUN_KEY_PATTERN)]] = Field(
        default_factory=list,
        max_length=1000,
        description="keys of the caller's grants to release first (cells that ended)",
    )
    wait: float = Field(5.0, ge=0, le=5, description="seconds to wait for the grant")


class ReleaseGrants(Request):
    keys: list[Annotated[str, Field(pattern=RUN_KEY_PATTERN)]] = Field(
        min_length=1, max_length=1000
    )


class DescribeGrant(Response):
    id: int
    key: str
    user: str
    kind: str
    queue: str
    gpus: int
    status: GrantStatus
    created_at: datetime
    granted_at: datetime | None = None
    released_at: datetime | None = None


class GrantList(Response):
    grants: list[DescribeGrant]


RoleName = Literal["admin", "lead", "researcher"]


def _researcher() -> list[RoleName]:
    return ["researcher"]


class Identity(Response):
    user: str = Field(description="the name runs and jobs are recorded under")
    admin: bool = Field(description="may change and cancel anyone's runs (c.LabRun.admins)")
    roles: list[RoleName] = Field(
        default_factory=_researcher,
        description="the caller's roles, the highest first: an admin changes every run, a "
        "lead the runs of the projects they lead, a researcher (everyone) their own",
    )
    leads: list[str] = Field(
        default_factory=list, description="the projects the caller leads, by name"
    )


# --- reports ---------------------------------------------------------------------------


class CreateReport(Request):
    """A report notebook that a run executed and rendered, recorded for the Reports panel."""

    name: str = Field(min_length=1, max_length=256)
    notebook: str = Field(min_length=1, max_length=1024, description="the report notebook's path")
    params: dict[str, Any] = Field(default_factory=dict)
    run_id: Id = Field(description="the run that executed the report")
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
    run_id: Id | None = Field(None, description="reports of this run (or of this sweep)")
    limit: int = Field(200, ge=1, le=1000)


# --- the audit log ---------------------------------------------------------------------

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _point_in_time(value: Any) -> Any:
    """An ISO 8601 time (UTC unless it says otherwise), or a duration back from now."""
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if match is not None:
        back = timedelta(seconds=float(match[1]) * _DURATION_UNITS[match[2]])
        return datetime.now(timezone.utc) - back
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither an ISO time (2026-11-30T09:00:00Z) nor a duration back "
            "from now (30m, 12h, 7d, 2w)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


PointInTime = Annotated[
    datetime | None,
    BeforeValidator(_point_in_time),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}]}),
]


class ListAuditQuery(Request):
    user: str | None = Field(None, description="only this user's requests")
    since: PointInTime = Field(
        None,
        description="from this time on: an ISO time (2026-11-30T09:00:00Z) or a duration "
        "back from now (30m, 12h, 7d, 2w)",
    )
    until: PointInTime = Field(None, description="up to this time (as since)")
    action: str | None = Field(
        None,
        max_length=64,
        description="only this action (run.cancel, queue.create, token.revoke, ...), or "
        "every action on one kind of thing (run, token, ...)",
    )
    run: Id | None = Field(None, description="only the requests about this run")
    target_type: str | None = Field(
        None, max_length=32, description="only the requests about this kind of thing (queue)"
    )
    target_id: str | None = Field(
        None, max_length=256, description="only the requests about this one (a queue's name)"
    )
    cursor: str | None = Field(
        None, min_length=1, description="the next_cursor of the previous page: the page after it"
    )
    limit: int = Field(100, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_target(self) -> ListAuditQuery:
        if self.run is not None and (self.target_type or self.target_id):
            raise ValueError("give run, or target_type and target_id, not both")
        return self


class DescribeAuditEntry(Response):
    id: int
    time: datetime = Field(description="when the server answered")
    user: str = Field(description="who the request acted for")
    scope: str = Field(description="the credentials' scope: user, run (a job's token) or pool")
    action: str = Field(description="what was asked: run.cancel, queue.create, token.revoke, ...")
    method: str
    path: str
    target_type: str | None = Field(description="what it was about: run, queue, token, ...")
    target_id: str | None
    status: int = Field(description="the HTTP status answered: 4xx for a refused attempt")
    detail: dict[str, Any] | None = Field(
        description="the names of the body fields it set, the path's other names (an "
        "artifact's), the error's code; never the body's values"
    )
    server: str = Field(description="the server that answered (host:pid)")


class AuditList(Response):
    entries: list[DescribeAuditEntry] = Field(description="newest first")
    next_cursor: str | None = Field(
        None, description="pass as cursor (same filters) for the next page; null after the last"
    )
