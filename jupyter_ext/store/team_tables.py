"""The team's tables: the scheduler of record's lease, events between servers, the audit
log, and the GPU grants of ``%%mlrun`` cells and sessions (see ``grants.py``).

Apart from ``tables.py`` (the runs and what hangs off them), on the same ``Base``: the
store package imports both, so a model of either is always in the metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .tables import Base, BigID, utcnow


class Lease(Base):
    """Who acts for the store (the ``dispatcher`` lease: the scheduler of record); see
    ``leases.py``. ``expires``: seconds by the database's clock; ``epoch``: one per holder."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(256))
    user: Mapped[str | None] = mapped_column(String(128))
    url: Mapped[str | None] = mapped_column(String(2048))
    scheduler: Mapped[str | None] = mapped_column(String(512))
    epoch: Mapped[int] = mapped_column(default=0)
    acquired: Mapped[float] = mapped_column(Float, default=0.0)
    expires: Mapped[float] = mapped_column(Float, default=0.0)


class Event(Base):
    """An event for the other servers of the store (``relay.py``), kept a minute."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    origin: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]
    time: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """Who did what to which run, queue, token or setting, and when: one row per mutating
    request, whatever its answer."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    user: Mapped[str] = mapped_column(String(128))
    # user, run or pool (see labrun.jupyter_ext.auth)
    scope: Mapped[str] = mapped_column(String(8))
    action: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(2048))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[int]
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    server: Mapped[str] = mapped_column(String(256))

    __table_args__ = (
        Index("ix_audit_time", "time"),
        Index("ix_audit_user_time", "user", "time"),
    )


class Grant(Base):
    """GPUs a ``%%mlrun`` cell or session holds (or waits for), given by the scheduler of
    record under the same rules as jobs. ``key``: the cell's or session's run key;
    ``client``: the kernel's Dask client id (a grant whose kernel is gone is released)."""

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    user: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int]
    # waiting, granted or released
    status: Mapped[str] = mapped_column(String(16))
    client: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    granted_at: Mapped[datetime | None]
    released_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_grants_status", "status"),)
