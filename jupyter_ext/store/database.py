"""Engine, sessions and schema management for the run store.

The store's methods are synchronous SQLAlchemy code; the server never calls them on its
event loop but through :meth:`Database.run`, which runs them on a small thread pool.
SQLite allows a single writer, so its pool has one thread: requests queue in memory
instead of fighting over the file lock (those a person waits on, :meth:`Database.run_first`,
ahead of the others: ``threads.py``).
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from labrun.errors import InvalidRequest, SchemaMismatch, StoreUnavailable

from .threads import StoreThreads

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


def ensure_folder(path: Path, what: str, fix: str, *, probe: bool = False) -> Path:
    """``path``, created if missing; a folder that cannot be made (or, with ``probe``,
    written: a real file, as permissions say nothing to root) is a one-line error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if probe:
            with tempfile.TemporaryFile(dir=path, prefix=".labrun-write-probe-"):
                pass
    except OSError as err:
        doing = "write to" if path.is_dir() else "create"
        raise StoreUnavailable(
            f"cannot {doing} the folder {str(path)!r} for {what} ({err.strerror or err}); {fix}"
        ) from None
    return path


def sqlite_path(parsed: URL) -> Path | None:
    """The file of a SQLite URL (also ``sqlite:///file:PATH?mode=ro&uri=true``); None in memory."""
    database = parsed.database or ""
    if parsed.query.get("uri") in ("true", "1") and database.startswith("file:"):
        database = database.removeprefix("file:")
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    return Path(database)


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
        path = sqlite_path(parsed)
        if path is not None:
            ensure_folder(
                path.parent,
                "the database",
                "point c.LabRun.db_url (or LABRUN_DB_URL) at a folder this user can write",
            )
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # The option is a ConfigParser value: a % (URL-encoded, as in file%3A or a password)
    # must be doubled.
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


# PostgreSQL keeps no NUL character in text or JSON (SQLite does); such a request is bad
# input, not a server error. (A log line's NULs are replaced before it gets here: a
# program's output is kept whatever it printed.)
NUL_REFUSED = (
    "the request holds a NUL character (\\u0000), which this server's database (PostgreSQL) "
    "cannot store in text; remove it from the names, values and filters sent"
)


def _holds_nul(err: DataError) -> bool:
    message = str(err.orig or err)
    return "NUL" in message or "\\u0000" in message


def _unavailable(engine: Engine, err: DBAPIError, doing: str, fix: str) -> StoreUnavailable:
    url = engine.url.render_as_string(hide_password=True)
    # The driver's own first line says why (no such host, read-only, no permission).
    reason = str(err.orig).strip().splitlines()[0] if err.orig is not None else str(err)
    return StoreUnavailable(f"cannot {doing} the database {url} ({reason}); {fix}")


CHECK_URL = "check c.LabRun.db_url (or LABRUN_DB_URL, or --db-url) and that the database is up"


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """The database's current schema revision and the newest one this labrun knows."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    head = script.get_current_head()
    assert head is not None
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as err:
        raise _unavailable(engine, err, "open", CHECK_URL) from None
    return current, head


def check_not_newer(engine: Engine) -> tuple[str | None, str]:
    """The schema revisions, refusing a database that a newer labrun wrote."""
    current, head = schema_revisions(engine)
    script = ScriptDirectory.from_config(alembic_config(engine))
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaMismatch(
            f"the database {url} has schema revision {current!r}, written by a newer labrun "
            f"(this one knows up to {head!r}); upgrade labrun (`pip install -U labrun`) "
            "or point c.LabRun.db_url at another database"
        )
    return current, head


def check_writable(engine: Engine) -> None:
    """Refuse a store that cannot be written, now rather than at the first write.

    A real write, rolled back: permissions say nothing when the server runs as root, and
    a read-only file, mount, ``?mode=ro`` URL or PostgreSQL role all fail only here.
    """
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            transaction.rollback()
    except DBAPIError as err:
        raise _unavailable(
            engine,
            err,
            "write to",
            "make it writable for the user the server runs as, or point c.LabRun.db_url at "
            "a database it can write",
        ) from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def check_schema(engine: Engine, *, auto_upgrade: bool) -> tuple[str | None, str]:
    """Make sure the database has this labrun's schema, upgrading it if allowed.

    A database from a newer labrun is never touched; an older one is upgraded only with
    ``auto_upgrade``, and otherwise the error names the command that upgrades it. Returns
    the revision found and the one the database has now.
    """
    current, head = check_not_newer(engine)
    if current == head:
        return current, head
    url = engine.url.render_as_string(hide_password=True)
    if not auto_upgrade:
        raise SchemaMismatch(
            f"the database {url} has schema revision {current!r}; this labrun needs {head!r}. "
            f"Upgrade it with `labrun db upgrade --db-url {url}`"
        )
    try:
        upgrade(engine)
    except DBAPIError as err:
        raise _unavailable(engine, err, "upgrade", CHECK_URL) from None
    return current, head


class Database:
    """An engine, a session factory and the threads that run store calls."""

    def __init__(self, url: str, *, threads: int | None = None) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        if threads is None:
            threads = 1 if self.dialect == "sqlite" else 8
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._threads = StoreThreads(threads, "labrun-db")

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
        return await self._call(functools.partial(fn, *args, **kwargs), urgent=False)

    async def run_first(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """As :meth:`run`, before the calls still queued: one a person waits on (a GPU
        cell's grant), which should not wait for the records sent in the background."""
        return await self._call(functools.partial(fn, *args, **kwargs), urgent=True)

    async def _call(self, call: Callable[[], T], *, urgent: bool) -> T:
        try:
            return await asyncio.wrap_future(self._threads.submit(call, urgent=urgent))
        except DataError as err:
            if _holds_nul(err):
                raise InvalidRequest(NUL_REFUSED) from err
            raise

    def close(self) -> None:
        self._threads.shutdown()
        self.engine.dispose()
