"""The operations an outbox delivers: typed, so they cross processes (through the spool) intact.

Operations name their run by id, or by the key its creator chose (a worker records a cell
whose run the kernel creates), which the outbox resolves when it sends.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from labrun.client import Client
from labrun.errors import Conflict, InvalidRequest, LabrunError, NotFound, PayloadTooLarge
from labrun.models import CreateReport, CreateRun, LinkDataset, LogEntryIn, UpdateItem, UpdateRun

from .batches import refusal, update_runs

log = logging.getLogger("labrun")

# One metric point: (key, value, step, time).
Point = tuple[str, float | None, int, float]


class RunTarget(BaseModel):
    """The run an operation is about: by id, or by the key its creator gave it."""

    run_id: int | None = None
    run_key: str | None = None

    def send_to(self, client: Client, run_id: int) -> Any:
        """Send this to the server for the run ``run_id``; the server's answer."""
        raise NotImplementedError

    def describe(self) -> str:
        return (
            f"run {self.run_id}" if self.run_id is not None else f"the run with key {self.run_key}"
        )


class CreateRunOp(BaseModel):
    kind: Literal["create_run"] = "create_run"
    body: CreateRun

    def send(self, client: Client) -> Any:
        return client.create_run(self.body)


class UpdateRunOp(RunTarget):
    kind: Literal["update_run"] = "update_run"
    body: UpdateRun

    def send_to(self, client: Client, run_id: int) -> Any:
        return client.update_run(run_id, self.body)


class AppendLogsOp(RunTarget):
    kind: Literal["append_logs"] = "append_logs"
    entries: list[LogEntryIn]
    attempt: int | None = None  # the attempt of the run that wrote them

    def send_to(self, client: Client, run_id: int) -> Any:
        return client.append_logs(run_id, self.entries, attempt=self.attempt)


class MetricsOp(RunTarget):
    kind: Literal["metrics"] = "metrics"
    batch_id: str
    rows: list[Point]

    def send_to(self, client: Client, run_id: int) -> Any:
        return client.post_metrics_json(run_id, encode_batch(self.batch_id, self.rows))


class LinkDatasetOp(RunTarget):
    kind: Literal["link_dataset"] = "link_dataset"
    body: LinkDataset

    def send_to(self, client: Client, run_id: int) -> Any:
        return client.link_dataset(run_id, self.body)


class ArtifactOp(RunTarget):
    kind: Literal["artifact"] = "artifact"
    name: str
    content_type: str = "application/octet-stream"
    artifact_kind: str = "file"
    attempt: int | None = None  # the dispatched attempt that made it (a job's files)
    # In memory the bytes; in the spool, the id of the file beside it that holds them.
    data: bytes = Field(b"", exclude=True)
    blob: str | None = None

    def send_to(self, client: Client, run_id: int) -> Any:
        return client.upload_artifact(
            run_id,
            self.name,
            self.data,
            content_type=self.content_type,
            kind=self.artifact_kind,
            attempt=self.attempt,
        )


class UpdateRunsOp(BaseModel):
    """Run updates put one after another, sent in one request (``POST runs/updates``): the
    outbox joins them as it takes them, so a worker's ended jobs cost the server one."""

    kind: Literal["update_runs"] = "update_runs"
    ops: list[UpdateRunOp]

    def send(self, client: Client) -> None:
        """Send the updates not abandoned; log those the server refused, as the outbox
        logs a refused update sent alone."""
        ops = [op for op in self.ops if abandoned(op) is None]
        items = [
            UpdateItem(run_id=op.run_id, **op.body.model_dump(exclude_unset=True)) for op in ops
        ]
        for op, outcome in zip(ops, update_runs(client, items) if items else [], strict=True):
            if (error := refusal(outcome)) is not None:
                quiet = isinstance(error, NotFound | Conflict)  # finished or gone meanwhile
                (log.info if quiet else log.warning)(
                    "labrun: a record of %s was not taken: %s", op.describe(), error.message
                )


def joinable(item: Any, on_sent: Callable[[Any], None] | None) -> bool:
    """A run's update, named by id, whose answer nobody waits for: one that can be joined."""
    return isinstance(item, UpdateRunOp) and item.run_id is not None and on_sent is None


class CancelRunOp(RunTarget):
    kind: Literal["cancel_run"] = "cancel_run"

    def send_to(self, client: Client, run_id: int) -> Any:
        return client.cancel_run(run_id)


class CreateReportOp(BaseModel):
    kind: Literal["create_report"] = "create_report"
    body: CreateReport

    def send(self, client: Client) -> Any:
        return client.create_report(self.body)


Op = Annotated[
    CreateRunOp
    | UpdateRunOp
    | UpdateRunsOp
    | AppendLogsOp
    | MetricsOp
    | LinkDatasetOp
    | ArtifactOp
    | CancelRunOp
    | CreateReportOp,
    Field(discriminator="kind"),
]
OPERATION: TypeAdapter[Op] = TypeAdapter(Op)

# What may be put: an operation, or a function that makes some when the outbox gets to it
# (a kernel's records are put while a cell runs and made once it is over).
Item = BaseModel | Callable[[], list[Any]]


def metrics_op(run_id: int, points: list[Point]) -> MetricsOp:
    """A batch of points (built without validation: this is the hot path)."""
    return MetricsOp.model_construct(
        run_id=run_id, run_key=None, batch_id=uuid.uuid4().hex, rows=points
    )


def encode_batch(batch_id: str, points: list[Point]) -> bytes:
    """The ``LogMetrics`` JSON of a batch in its compact ``rows`` form: the hot path.

    NaN and infinities go as the JSON constants ``NaN``, ``Infinity`` and ``-Infinity``,
    which the server reads (and stores as such).
    """
    return json.dumps({"batch_id": batch_id, "rows": points}).encode()


# The (run id, attempt) of the jobs this process gave up: its worker was cut off from the
# server, which runs them again elsewhere. The server would refuse their records (409) once
# it lost the attempt; until then they would wait, and be retried.
_abandoned: set[tuple[int, int]] = set()


def abandon(run_id: int, attempt: int) -> None:
    """Send nothing more of ``attempt`` of ``run_id``, from memory or from the spool."""
    _abandoned.add((run_id, attempt))


def is_abandoned(run_id: int | None, attempt: int | None) -> bool:
    return (run_id, attempt) in _abandoned


def abandoned(op: BaseModel) -> int | None:
    """The attempt ``op`` is a record of, if this process abandoned it."""
    if isinstance(op, UpdateRunOp):
        attempt = op.body.attempt
    elif isinstance(op, AppendLogsOp | ArtifactOp):
        attempt = op.attempt
    else:
        return None
    return attempt if is_abandoned(op.run_id, attempt) else None


def split_points(
    send: Callable[[MetricsOp], Any], op: MetricsOp, err: LabrunError
) -> list[tuple[Point, str]]:
    """Send the good points of a batch the server refused (``err``) in halves, until
    each bad one is alone: those, each with the server's reason."""
    bad: list[tuple[Point, str]] = []

    def halve(rows: list[Point], batch_id: str, why: str) -> None:
        if len(rows) == 1:
            bad.append((rows[0], why))
            return
        middle = len(rows) // 2
        for part, half in (("a", rows[:middle]), ("b", rows[middle:])):
            sub = batch_id + part  # 32 hex digits, then a letter per halving
            try:
                send(
                    MetricsOp.model_construct(
                        run_id=op.run_id, run_key=op.run_key, batch_id=sub, rows=half
                    )
                )
            except (InvalidRequest, PayloadTooLarge) as refused:
                halve(half, sub, refused.message)

    halve(op.rows, op.batch_id, err.message)
    return bad


def describe_target(op: BaseModel) -> str:
    """The run an operation is about, for messages."""
    if isinstance(op, RunTarget):
        return op.describe()
    if isinstance(op, CreateRunOp):
        return f"a new run ({op.body.name or op.body.key or op.body.kind.value})"
    if isinstance(op, CreateReportOp):
        return f"run {op.body.run_id} (its report)"
    if isinstance(op, UpdateRunsOp):
        return "runs " + ", ".join(str(update.run_id) for update in op.ops)
    return "a run"
