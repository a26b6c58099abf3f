"""metric summary index carries run_id

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metric_summaries_key_value"))
        batch_op.create_index(
            "ix_metric_summaries_key_value_run", ["key", "value", "run_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_summaries_key_value_run")
        batch_op.create_index(
            batch_op.f("ix_metric_summaries_key_value"), ["key", "value"], unique=False
        )
