"""The store's tests: each gets a migrated store on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labrun.jupyter_ext.store import Database, Store, check_schema


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    db = Database(db_url)
    check_schema(db.engine, auto_upgrade=True)
    yield Store(db, artifact_root=str(tmp_path / "artifacts"))
    db.close()
