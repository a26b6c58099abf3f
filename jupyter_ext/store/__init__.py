"""The run store: SQLAlchemy tables (tables.py), migrations and the services over them."""

from __future__ import annotations

from .artifacts import ArtifactStore
from .audit import AuditStore
from .batches import BatchStore
from .database import Database, check_schema
from .datasets import DatasetStore
from .dispatch import DispatchStore
from .events import EventStore
from .grants import GrantStore
from .jobs import JobStore
from .leases import LeaseStore
from .logs import LogStore
from .metrics import MetricStore
from .pool import PoolStore
from .reports import ReportStore
from .runs import RunStore
from .sweeps import SweepStore
from .tokens import TokenStore

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
        self.tokens = TokenStore(db)
        self.jobs = JobStore(db, self.runs)
        self.leases = LeaseStore(db)
        self.events = EventStore(db)
        self.dispatch = DispatchStore(db, self.runs, self.tokens, self.leases)
        self.batches = BatchStore(db, self.runs, self.dispatch)
        self.sweeps = SweepStore(db, self.runs, self.jobs)
        self.reports = ReportStore(db)
        self.audit = AuditStore(db)
        self.grants = GrantStore(db, self.leases)
