"""Alembic migrations: they build the models' schema, go down and up, and guard versions."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from support.postgres import PostgresServer

from labrun.errors import SchemaMismatch
from labrun.jupyter_ext.store import database
from labrun.jupyter_ext.store.tables import Base, in_models


def test_migrations_build_exactly_the_models(db_url: str) -> None:
    engine = database.make_engine(db_url)
    database.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": in_models})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"


def test_downgrade_to_empty_and_up_again(db_url: str) -> None:
    engine = database.make_engine(db_url)
    database.upgrade(engine)
    database.downgrade(engine, "base")
    assert database.schema_revisions(engine)[0] is None
    database.upgrade(engine)
    current, head = database.schema_revisions(engine)
    assert current == head


def test_an_older_schema_names_the_upgrade_command(db_url: str) -> None:
    engine = database.make_engine(db_url)
    with pytest.raises(SchemaMismatch, match="labrun db upgrade --db-url"):
        database.check_schema(engine, auto_upgrade=False)
    database.check_schema(engine, auto_upgrade=True)
    database.check_schema(engine, auto_upgrade=False)


def test_a_newer_schema_is_refused_and_left_alone(db_url: str) -> None:
    engine = database.make_engine(db_url)
    database.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaMismatch, match="written by a newer labrun"):
        database.check_schema(engine, auto_upgrade=True)
    assert database.schema_revisions(engine)[0] == "9999"


def test_servers_upgrading_a_fresh_postgresql_database_at_once_all_succeed(
    postgres: PostgresServer,
) -> None:
    # Given a team's servers started together on an empty database, each upgrading it
    # (as `labrun db upgrade` does, in processes of their own)
    url = postgres.create_database()
    upgrades = [
        subprocess.Popen(
            [sys.executable, "-m", "labrun.cli", "db", "upgrade", "--db-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [(process.communicate(timeout=120)[0], process.returncode) for process in upgrades]
    # Then none fails (each waits for the one before, and finds the schema at head)
    assert [code for _, code in outputs] == [0, 0, 0], outputs
    engine = database.make_engine(url)
    current, head = database.schema_revisions(engine)
    engine.dispose()
    assert current == head
