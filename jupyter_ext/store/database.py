"""Engine, sessions and schema management for the run store.

The store's methods are synchronous SQLAlchemy code; the server never calls them on its
event loop but through :meth:`Database.run`, which runs them on a small thread pool.
SQLite allows a single writer, so its pool has one thread: requests queue in memory
instead of fighting over the file lock.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from labrun.errors import InvalidRequest, SchemaMismatch

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never wait for the writer. NORMAL is durable in WAL mode across
    # application crashes; only an OS crash can lose the last transactions.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the settings labrun relies on."""
    try:
        parsed = make_url(url)
    except Exception as err:
        raise InvalidRequest(
            f"db_url {url!r} is not a database URL; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        ) from err
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """The database's current schema revision and the newest one this labrun knows."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    head = script.get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def check_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Make sure the database has this labrun's schema, upgrading it if allowed.

    A database from a newer labrun is never touched; an older one is upgraded only with
    ``auto_upgrade``, and otherwise the error names the command that upgrades it.
    """
    current, head = schema_revisions(engine)
    if current == head:
        return
    script = ScriptDirectory.from_config(alembic_config(engine))
    known = {rev.revision for rev in script.walk_revisions()}
    url = engine.url.render_as_string(hide_password=True)
    if current is not None and current not in known:
        raise SchemaMismatch(
            f"the database {url} has schema revision {current!r}, written by a newer labrun "
            f"(this one knows up to {head!r}); upgrade labrun (`pip install -U labrun`) "
            "or point c.LabRun.db_url at another database"
        )
    if not auto_upgrade:
        raise SchemaMismatch(
            f"the database {url} has schema revision {current!r}; this labrun needs {head!r}. "
            f"Upgrade it with `labrun db upgrade --db-url {url}`"
        )
    upgrade(engine)


class Database:
    """An engine, a session factory and the threads that run store calls."""

    def __init__(self, url: str, *, threads: int | None = None) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        if threads is None:
            threads = 1 if self.dialect == "sqlite" else 8
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="labrun-db")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success, rolls back on error, and always closes."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a synchronous store call on the database threads, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
