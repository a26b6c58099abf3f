"""The run store: SQLAlchemy models, migrations and the services over them."""

from __future__ import annotations

from collections.abc import Callable

from .artifacts import ArtifactStore
from .database import Database, check_schema
from .datasets import DatasetStore
from .jobs import JobStore
from .logs import LogStore
from .metrics import MetricStore
from .models import ServerSetting
from .pool import PoolStore
from .reports import ReportStore
from .runs import RunStore

__all__ = ["Database", "Store", "check_schema"]


class Store:
    """Every service of the store over one database."""

    def __init__(self, db: Database, *, artifact_root: str, worker_timeout: float = 30.0) -> None:
        self.db = db
        self.runs = RunStore(db)
        self.metrics = MetricStore(db)
        self.logs = LogStore(db)
        self.artifacts = ArtifactStore(db, artifact_root)
        self.datasets = DatasetStore(db)
        self.pool = PoolStore(db, worker_timeout=worker_timeout)
        self.jobs = JobStore(db, self.runs)
        self.reports = ReportStore(db)

    def secret(self, key: str, make: Callable[[], str]) -> str:
        """A server setting, created once by ``make`` and shared by every server."""
        with self.db.session() as session:
            row = session.get(ServerSetting, key)
            if row is None:
                row = ServerSetting(key=key, value=make())
                session.add(row)
            return row.value
