"""Alembic environment: runs migrations on the engine labrun hands it."""

from alembic import context
from sqlalchemy import create_engine, text

from labrun.jupyter_ext.store.tables import Base, in_models

config = context.config
engine = config.attributes.get("engine") or create_engine(
    config.get_main_option("sqlalchemy.url") or ""
)

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # Servers started at once on a fresh database each upgrade it: one at a time, in
        # one transaction each, so the second finds the schema at head and does nothing.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('labrun-schema'))"))
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=in_models,
    )
    with context.begin_transaction():
        context.run_migrations()
