"""jobs: where a job runs (host, pid) and its heartbeat, to tell a lost job from a running one

Revision ID: jobs_0002
Revises: jobs_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "jobs_0002"
down_revision = "jobs_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("host", sa.String(255), nullable=True))
        b.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        b.add_column(sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.drop_column("heartbeat")
        b.drop_column("pid")
        b.drop_column("host")
