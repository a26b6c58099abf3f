"""Leases in the store: which server is the scheduler of record.

One row per lease (``dispatcher`` is the one labrun has). A server takes it when it is free
(its holder let it go, or stopped renewing it and it expired) and renews it while it lives;
each new holder raises the ``epoch``. A store change made for the holder (a dispatch, a lost
job) calls :meth:`LeaseStore.fence` in its own transaction, so a holder that lost the lease
without knowing it yet (a long pause) cannot act any more: its change is refused whole.

Time is the database's clock (PostgreSQL's ``clock_timestamp()``), so servers whose clocks
differ still agree on when a lease expires; SQLite is on one machine, whose clock it is.
"""

from __future__ import annotations

import itertools
import socket
import time
from dataclasses import dataclass

import psutil
from sqlalchemy import ColumnElement, Float, case, cast, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labrun.errors import LabrunError

from .database import Database
from .team_tables import Lease

DISPATCHER = "dispatcher"


class LeaseLost(LabrunError):
    """This server acted for a lease another server holds now."""

    status = 409
    code = "lease_lost"


@dataclass(frozen=True)
class Hold:
    """A lease as its holder took it: what its fenced changes carry."""

    name: str
    holder: str
    epoch: int


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    holder: str | None
    user: str | None
    url: str | None
    scheduler: str | None
    epoch: int
    acquired: float
    expires: float
    now: float

    @property
    def held(self) -> bool:
        return self.holder is not None and self.expires > self.now


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._made: set[str] = set()  # leases whose row is known to exist

    def _now(self) -> ColumnElement[float]:
        if self.db.dialect == "postgresql":
            return cast(func.extract("epoch", func.clock_timestamp()), Float)
        return literal(time.time(), Float)

    def acquire(
        self,
        name: str,
        holder: str,
        *,
        seconds: float,
        user: str = "",
        url: str = "",
        scheduler: str = "",
    ) -> Hold | None:
        """Take or renew ``name`` for ``seconds``; the hold, or None while another has it.

        A holder on this machine whose process is gone lets go at once: a server killed
        and started again does not wait out its own lease.
        """
        self._ensure(name)
        now = self._now()
        with self.db.session() as session:
            current = session.get(Lease, name)
            assert current is not None
            free = Lease.expires < now
            if current.holder and current.holder != holder and _dead_here(current.holder):
                free = literal(True)
            row = session.execute(
                update(Lease)
                .where(Lease.name == name, (Lease.holder == holder) | free)
                .values(
                    epoch=case((Lease.holder == holder, Lease.epoch), else_=Lease.epoch + 1),
                    acquired=case((Lease.holder == holder, Lease.acquired), else_=now),
                    holder=holder,
                    expires=now + seconds,
                    user=user,
                    url=url,
                    scheduler=scheduler,
                )
                .returning(Lease.epoch),
                execution_options={"synchronize_session": False},
            ).first()
        return None if row is None else Hold(name, holder, row.epoch)

    def release(self, hold: Hold) -> None:
        """Let go of ``hold`` now, so another server takes over without waiting."""
        with self.db.session() as session:
            session.execute(
                update(Lease)
                .where(
                    Lease.name == hold.name,
                    Lease.holder == hold.holder,
                    Lease.epoch == hold.epoch,
                )
                .values(expires=0.0),
                execution_options={"synchronize_session": False},
            )

    def fence(self, session: Session, hold: Hold) -> None:
        """Refuse the change ``session`` makes unless ``hold`` is still the lease's holder.

        The row is locked (PostgreSQL) or the write lock held (SQLite) until the change
        commits, so no other server takes the lease in between.
        """
        row = session.execute(
            update(Lease)
            .where(
                Lease.name == hold.name,
                Lease.holder == hold.holder,
                Lease.epoch == hold.epoch,
                Lease.expires > self._now(),
            )
            .values(holder=hold.holder)
            .returning(Lease.epoch),
            execution_options={"synchronize_session": False},
        ).first()
        if row is None:
            raise LeaseLost(
                f"this server no longer holds the {hold.name} lease (epoch {hold.epoch}); "
                "another server acts for the store now"
            )

    def info(self, name: str) -> LeaseInfo:
        self._ensure(name)
        with self.db.session() as session:
            row = session.execute(
                select(
                    Lease.name,
                    Lease.holder,
                    Lease.user,
                    Lease.url,
                    Lease.scheduler,
                    Lease.epoch,
                    Lease.acquired,
                    Lease.expires,
                    self._now(),
                ).where(Lease.name == name)
            ).one()
        return LeaseInfo(*row)

    def _ensure(self, name: str) -> None:
        """The lease's row, made the first time (a lease nobody held is free); asked of the
        database once, not at every renewal."""
        if name in self._made:
            return
        with self.db.session() as session:
            found = session.get(Lease, name) is not None
        if not found:
            try:
                with self.db.session() as session:
                    session.add(Lease(name=name, epoch=0, acquired=0.0, expires=0.0))
            except IntegrityError:
                pass  # another server made it meanwhile
        self._made.add(name)


def server_id() -> str:
    """A new name for a server of this process, as leases, events and the audit log name
    it: ``host:pid:start/n`` (tests start several servers in one process)."""
    return f"{_PROCESS}/{next(_COUNT)}"


def _dead_here(holder: str) -> bool:
    """Whether ``holder`` (a server id) was a process of this machine that is gone."""
    host, _, rest = holder.partition(":")
    pid, _, started = rest.partition(":")
    started = started.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        process = psutil.Process(int(pid))
        # The same pid may have been given to another process since.
        return f"{process.create_time():.0f}" != started
    except psutil.NoSuchProcess:
        return True


def _process_id() -> str:
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.0f}"


_PROCESS = _process_id()
_COUNT = itertools.count(1)
