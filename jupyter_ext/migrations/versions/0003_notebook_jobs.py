"""notebook jobs: the job spec, assigned devices, job priority; what workers run

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("devices", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("claimable_attempt", sa.Integer(), nullable=True))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("nthreads", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("nthreads")
        batch_op.drop_column("runs")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("claimable_attempt")
        batch_op.drop_column("priority")
        batch_op.drop_column("devices")
        batch_op.drop_column("job")
