"""run listing: indexes every sort walks, and the text non-numeric parameters sort by

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_INDEXES = {
    "ix_runs_name": ["name", "id"],
    "ix_runs_user": ["user", "id"],
    "ix_runs_kind": ["kind", "id"],
    "ix_runs_queue": ["queue", "id"],
    "ix_runs_project": ["project_id", "id"],
    "ix_runs_started": ["started_at", "id"],
    "ix_runs_ended": ["ended_at", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("params", schema=None) as batch_op:
        batch_op.add_column(sa.Column("value_text", sa.String(length=256), nullable=True))
        batch_op.drop_index("ix_params_key_num")
    # The JSON text as stored, as the server writes it for new values (json.dumps).
    op.execute(
        "UPDATE params SET value_text = substr(CAST(value AS TEXT), 1, 256) WHERE value_num IS NULL"
    )
    op.create_index("ix_params_key_num_run", "params", ["key", "value_num", "run_id"])
    op.create_index("ix_params_key_text_run", "params", ["key", "value_text", "run_id"])
    for name, columns in RUN_INDEXES.items():
        op.create_index(name, "runs", columns)


def downgrade() -> None:
    for name in RUN_INDEXES:
        op.drop_index(name, table_name="runs")
    op.drop_index("ix_params_key_text_run", table_name="params")
    op.drop_index("ix_params_key_num_run", table_name="params")
    with op.batch_alter_table("params", schema=None) as batch_op:
        batch_op.drop_column("value_text")
        batch_op.create_index("ix_params_key_num", ["key", "value_num"], unique=False)
