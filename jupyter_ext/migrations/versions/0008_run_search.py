"""run search: a trigram index on run names, and each finished run's duration to sort by

Revision ID: 0008
Revises: 0007

Both are what the runs list needs at a million runs: ``q`` (a substring of the name) was a
scan of every name, and the duration sort computed every run's duration before it could
order them.

The name index is the database's own trigram index: on SQLite an FTS5 table with the trigram
tokenizer (SQLite 3.34+), kept in step with ``runs`` by triggers; on PostgreSQL a GIN index
with ``pg_trgm`` (a trusted extension since PostgreSQL 13: a database owner may create it).
Where neither can be made, the upgrade says so and the search stays a scan: correct, slower.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

SQLITE_SEARCH = [
    (
        "CREATE VIRTUAL TABLE run_search USING fts5("
        "name, content='runs', content_rowid='id', tokenize='trigram')"
    ),
    (
        "CREATE TRIGGER run_search_insert AFTER INSERT ON runs BEGIN "
        "INSERT INTO run_search(rowid, name) VALUES (new.id, new.name); END"
    ),
    (
        "CREATE TRIGGER run_search_delete AFTER DELETE ON runs BEGIN "
        "INSERT INTO run_search(run_search, rowid, name) VALUES ('delete', old.id, old.name); END"
    ),
    (
        "CREATE TRIGGER run_search_update AFTER UPDATE OF name ON runs BEGIN "
        "INSERT INTO run_search(run_search, rowid, name) VALUES ('delete', old.id, old.name); "
        "INSERT INTO run_search(rowid, name) VALUES (new.id, new.name); END"
    ),
    "INSERT INTO run_search(run_search) VALUES ('rebuild')",
]


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("duration", sa.Double(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "UPDATE runs SET duration = EXTRACT(EPOCH FROM ended_at - started_at) "
            "WHERE ended_at IS NOT NULL AND started_at IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE runs SET duration = (julianday(ended_at) - julianday(started_at)) * 86400.0 "
            "WHERE ended_at IS NOT NULL AND started_at IS NOT NULL"
        )
    op.create_index("ix_runs_duration", "runs", ["duration", "id"])
    if bind.dialect.name == "sqlite":
        for statement in SQLITE_SEARCH:
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        # In a savepoint: without the privilege, the upgrade goes on without the index.
        try:
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                bind.exec_driver_sql(
                    "CREATE INDEX ix_runs_name_trgm ON runs USING gin (name gin_trgm_ops)"
                )
        except sa.exc.DBAPIError as err:
            log.warning(
                "labrun: no trigram index on run names (%s); searching runs by name scans "
                "them. A superuser can run `CREATE EXTENSION pg_trgm` and upgrade again.",
                str(err.orig).strip().splitlines()[0],
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS run_search_{trigger}")
        op.execute("DROP TABLE IF EXISTS run_search")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_runs_name_trgm")
    op.drop_index("ix_runs_duration", table_name="runs")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("duration")
