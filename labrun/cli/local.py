"""Reading the run store when no labrun server runs: what ``labrun runs`` does after the demo.

The CLI's read commands (runs, show, logs, compare, datasets, reports) talk to a server when
one is found. When none is, and ``LABRUN_SERVER_URL`` is not set, they read the store that
``jupyter lab`` and ``labrun server`` on this machine would use (``LABRUN_DB_URL``, else the
SQLite database in labrun's data dir) through the same store code the server's handlers
call, so the answers are the ones the server would give. Nothing is written: an older
schema is an error that names ``labrun db upgrade``, not an upgrade.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from rich.markup import escape
from typing_extensions import Self

from labrun import settings
from labrun.client import HOW_TO_CONNECT, Client, _query_value, discover
from labrun.errors import InvalidRequest, ServerUnavailable
from labrun.models import (
    ArtifactList,
    CompareQuery,
    Comparison,
    DatasetList,
    DescribeDataset,
    DescribeReport,
    DescribeRun,
    ListReportsQuery,
    ListRunsQuery,
    LogTail,
    LogTailQuery,
    ReportList,
    RunList,
)

from .output import notice


def _query(model: type[BaseModel], query: dict[str, Any]) -> Any:
    """``query`` validated as the server validates it: from the strings a URL carries."""
    values: dict[str, Any] = {}
    for name, value in query.items():
        if value is None:
            continue
        text = _query_value(value)
        info = model.model_fields[name]
        # A list travels comma-separated (see the handlers' parse_query).
        listed = any(
            typing.get_origin(a) is list
            for a in (info.annotation, *typing.get_args(info.annotation))
        )
        if listed and isinstance(text, str):
            values[name] = [part for part in text.split(",") if part]
        else:
            values[name] = text
    return model.model_validate(values)


class StoreReader:
    """The read side of :class:`labrun.client.Client`, answered from the store in-process."""

    def __init__(self, store: Any, where: str) -> None:
        self.store = store
        self.where = where

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.db.close()

    def list_runs(self, **query: Any) -> RunList:
        result: RunList = self.store.runs.list_runs(_query(ListRunsQuery, query))
        return result

    def get_run(self, run_id: int) -> DescribeRun:
        result: DescribeRun = self.store.runs.get(run_id)
        return result

    def artifacts(self, run_id: int) -> ArtifactList:
        result: ArtifactList = self.store.artifacts.list_artifacts(run_id)
        return result

    def run_datasets(self, run_id: int) -> list[dict[str, Any]]:
        rows = self.store.datasets.of_run(run_id)
        return [{"role": role, **v.model_dump(mode="json")} for role, v in rows]

    def logs(
        self, run_id: int, offset: int = 0, limit: int = 1000, *, attempt: int | None = None
    ) -> LogTail:
        query = _query(LogTailQuery, {"offset": offset, "limit": limit, "attempt": attempt})
        result: LogTail = self.store.logs.tail(run_id, query)
        return result

    def compare(self, run_ids: list[int] | tuple[int, ...]) -> Comparison:
        result: Comparison = self.store.runs.compare(
            _query(CompareQuery, {"runs": list(run_ids)}).runs
        )
        return result

    def datasets(self) -> DatasetList:
        result: DatasetList = self.store.datasets.list_datasets()
        return result

    def dataset(self, name: str) -> DescribeDataset:
        result: DescribeDataset = self.store.datasets.get(name)
        return result

    def reports(self, **query: Any) -> ReportList:
        result: ReportList = self.store.reports.list_reports(_query(ListReportsQuery, query))
        return result

    def report_location(self, report: DescribeReport) -> str:
        """Where the report's HTML is: its file, for a browser to open; else its stored URI."""
        from fsspec.core import url_to_fs
        from fsspec.implementations.local import LocalFileSystem

        uri = self.store.reports.file_uri(report.id, "html")
        fs, path = url_to_fs(uri)
        return str(path) if isinstance(fs, LocalFileSystem) else str(uri)


def open_store() -> StoreReader:
    """The store a server on this machine would open, read-only; ServerUnavailable if none."""
    no_server = "no labrun server is running"
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from labrun.jupyter_ext.store import Store
        from labrun.jupyter_ext.store.database import (
            Database,
            check_schema,
            sqlite_path,
            sqlite_url,
        )
    except ImportError as err:  # the core alone, without the server extra: no store here
        raise ServerUnavailable(f"no labrun server found: {HOW_TO_CONNECT}") from err
    url = os.environ.get("LABRUN_DB_URL") or sqlite_url(settings.data_dir() / "labrun.db")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidRequest(
            f"LABRUN_DB_URL {url!r} is not a database URL; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    where = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        # Reading creates nothing: no store yet is the same as no server.
        if path is None or not path.exists():
            raise ServerUnavailable(
                f"{no_server} and there is no run store at {path or url} yet: {HOW_TO_CONNECT}"
            )
        where = str(path)
    db = Database(url, threads=1)
    try:
        check_schema(db.engine, auto_upgrade=False)
    except BaseException:
        db.close()
        raise
    root = os.environ.get("LABRUN_ARTIFACT_ROOT") or str(settings.data_dir() / "artifacts")
    return StoreReader(Store(db, artifact_root=root), where)


@contextmanager
def reader() -> Iterator[Client | StoreReader]:
    """A client of the server in use, or, where none runs, the store it would use."""
    try:
        url, token = discover()
    except ServerUnavailable:  # only when LABRUN_SERVER_URL is unset
        store = open_store()
        notice.print(
            f"[dim]No labrun server is running: reading the store at {escape(store.where)} "
            "(`jupyter lab` or `labrun server` serves it live).[/]",
            soft_wrap=True,
        )
        with store:
            yield store
        return
    with Client(url, token) as client:
        yield client


def report_location(client: Client | StoreReader, report: DescribeReport) -> str:
    """Where to read a report: its URL on the server, or its file in the store."""
    if isinstance(client, StoreReader):
        return client.report_location(report)
    return f"{client.url}{settings.API_PREFIX.lstrip('/')}/reports/{report.id}/html"


__all__ = ["StoreReader", "open_store", "reader", "report_location"]
