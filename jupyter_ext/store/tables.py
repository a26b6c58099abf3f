"""The SQLAlchemy 2.0 models of the run store.

Every change to these tables comes with an Alembic migration in ``migrations/versions``;
``tests/store/test_migrations.py`` fails when the models and the migrations disagree.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints, so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


SQLITE_NAN = "NaN"


class MetricFloat(TypeDecorator[float]):
    """A metric value: a float that keeps NaN on SQLite too.

    SQLite stores a NaN bound as a REAL as NULL. Bound as the text 'NaN' it stays in the
    REAL column as text, which SQLite sorts after every number, as PostgreSQL sorts NaN;
    it reads back as a float NaN. Infinities are REALs on both.
    """

    impl = Float
    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # Replaces Float's own processing on SQLite, which would make the text a float
        # (and so NULL) again.
        def process(value: float | None) -> float | str | None:
            if value is None:
                return None
            value = float(value)
            return SQLITE_NAN if math.isnan(value) else value

        return process

    def process_result_value(self, value: Any, dialect: Any) -> float | None:
        return float(value) if isinstance(value, str) else value


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Chosen by the client that creates the run, so that others (the worker running a
    # %%mlrun cell) can find it before the creating request has answered.
    key: Mapped[str | None] = mapped_column(String(64))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str | None] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str | None] = mapped_column(String(128))
    requested_gpus: Mapped[int] = mapped_column(default=0)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    worker: Mapped[str | None] = mapped_column(String(256))
    attempt: Mapped[int] = mapped_column(default=0)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    source: Mapped[str | None] = mapped_column(Text)
    notebook: Mapped[str | None] = mapped_column(String(1024))
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A notebook job's spec (parameters aside, which live in params): the notebook JSON,
    # working directory, cell timeout. Kept so a server restart or a rerun loses nothing.
    job: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The GPU indices (on its worker) the run holds while it runs.
    devices: Mapped[list[Any] | None] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(default=0, server_default="0")
    # The attempt a worker may start now: set when the dispatcher submits one, cleared by
    # the claim and when the run is declared lost, so a stale task can never start it.
    claimable_attempt: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # Seconds from start to end, once it ended (the runs list sorts by it).
    duration: Mapped[float | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (
        Index("ix_runs_project_created", "project_id", "created_at"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_parent", "parent_id"),
        Index("ix_runs_created", "created_at"),
        Index("ix_runs_key", "key", unique=True),
        # Walked in order to list runs sorted by a column; the id breaks ties (SQLite's
        # indexes carry the id anyway, PostgreSQL's need it named).
        Index("ix_runs_name", "name", "id"),
        Index("ix_runs_user", "user", "id"),
        Index("ix_runs_kind", "kind", "id"),
        Index("ix_runs_queue", "queue", "id"),
        Index("ix_runs_project", "project_id", "id"),
        Index("ix_runs_started", "started_at", "id"),
        Index("ix_runs_ended", "ended_at", "id"),
        Index("ix_runs_duration", "duration", "id"),
        # The name search's trigram index is the database's own (migration 0008), outside
        # these models: an FTS5 table on SQLite, a pg_trgm GIN index on PostgreSQL.
    )


class RunTransition(Base):
    """Every status a run passed through, with its time."""

    __tablename__ = "run_transitions"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str | None] = mapped_column(Text)


# Characters of a parameter's JSON text kept to sort by: an index entry has a size limit.
PARAM_TEXT = 256


class Param(Base):
    __tablename__ = "params"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    # A copy of numeric values, so runs sort by a parameter numerically.
    value_num: Mapped[float | None] = mapped_column(Float)
    # The JSON text of any other value (its start), which such values sort by.
    value_text: Mapped[str | None] = mapped_column(String(PARAM_TEXT))

    # Walked in order to list runs sorted by a parameter: numbers, then other values.
    __table_args__ = (
        Index("ix_params_key_num_run", "key", "value_num", "run_id"),
        Index("ix_params_key_text_run", "key", "value_text", "run_id"),
    )


class Metric(Base):
    """One point of a metric's time series."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(256))
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(MetricFloat)
    time: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step"),)


class MetricSummary(Base):
    """The latest value (by step) and range of each metric of a run, for sorting and lists."""

    __tablename__ = "metric_summaries"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger)
    # The latest value may be NaN; min and max ignore NaN.
    value: Mapped[float | None] = mapped_column(MetricFloat)
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    count: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Float)

    # Walked in order to list runs sorted by a metric; run_id breaks ties.
    __table_args__ = (Index("ix_metric_summaries_key_value_run", "key", "value", "run_id"),)


class MetricBatch(Base):
    """Batch ids already stored, so a client's retry of a batch is not counted twice."""

    __tablename__ = "metric_batches"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    points: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunLog(Base):
    __tablename__ = "run_logs"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    # The attempt that wrote it, so a job re-queued after its worker died shows each
    # attempt's part apart. None for lines stored before attempts were recorded.
    attempt: Mapped[int | None]

    __table_args__ = (Index("ix_run_logs_run_id", "run_id", "id"),)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))
    uri: Mapped[str] = mapped_column(String(2048))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32), default="file")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_artifacts_run_name"),)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[DatasetVersion]] = relationship(
        order_by="DatasetVersion.id", back_populates="dataset"
    )


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    file_count: Mapped[int]
    source_path: Mapped[str | None] = mapped_column(String(2048))
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")

    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_version"),
        UniqueConstraint("dataset_id", "content_hash", name="uq_dataset_versions_hash"),
    )


class RunDataset(Base):
    __tablename__ = "run_datasets"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(8), default="input")


class Queue(Base):
    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    priority: Mapped[int] = mapped_column(default=0)
    max_gpus_per_user: Mapped[int | None]
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    host: Mapped[str] = mapped_column(String(256), default="")
    address: Mapped[str] = mapped_column(String(256), default="")
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="running")
    runs: Mapped[list[Any] | None] = mapped_column(JSON)
    nthreads: Mapped[int] = mapped_column(default=1, server_default="1")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(default=utcnow)


class GpuSample(Base):
    __tablename__ = "gpu_samples"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(256))
    gpu_index: Mapped[int]
    time: Mapped[float] = mapped_column(Float)
    utilization: Mapped[float | None] = mapped_column(Float)
    memory_used: Mapped[int | None] = mapped_column(BigInteger)
    memory_total: Mapped[int | None] = mapped_column(BigInteger)
    temperature: Mapped[float | None] = mapped_column(Float)
    power: Mapped[float | None] = mapped_column(Float)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))

    __table_args__ = (
        Index("ix_gpu_samples_worker_gpu_time", "worker_id", "gpu_index", "time"),
        Index("ix_gpu_samples_run_time", "run_id", "time"),
    )


class HostSample(Base):
    __tablename__ = "host_samples"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(256))
    time: Mapped[float] = mapped_column(Float)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    ram_used: Mapped[int | None] = mapped_column(BigInteger)
    ram_total: Mapped[int | None] = mapped_column(BigInteger)
    net_sent: Mapped[int | None] = mapped_column(BigInteger)
    net_recv: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_host_samples_worker_time", "worker_id", "time"),)


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    notebook: Mapped[str] = mapped_column(String(1024))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    html_uri: Mapped[str | None] = mapped_column(String(2048))
    notebook_uri: Mapped[str | None] = mapped_column(String(2048))
    user: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerSetting(Base):
    """Small key/value state the server keeps (its token-signing secret)."""

    __tablename__ = "server_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Token(Base):
    """A token the server issued, for ``labrun tokens`` to list and revoke.

    The token itself is not stored: its signature proves it, and its claims name this row.
    """

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    # user, run or pool (see labrun.jupyter_ext.auth)
    scope: Mapped[str] = mapped_column(String(8))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_tokens_user_created", "user", "created_at"),
        # Servers poll for recent revocations once a second.
        Index("ix_tokens_revoked_at", "revoked_at"),
    )


# Made by migrations outside these models: the name search's trigram index (an FTS5 table
# and its shadow tables on SQLite, a GIN index on PostgreSQL).
OUTSIDE_MODELS = ("run_search", "ix_runs_name_trgm")


def in_models(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's ``include_object``: compare only what these models declare."""
    return not (reflected and compare_to is None and (name or "").startswith(OUTSIDE_MODELS))
