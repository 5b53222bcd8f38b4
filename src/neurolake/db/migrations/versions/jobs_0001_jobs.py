"""jobs: job rows with progress (ingest, pyramid, materialize, …)

Revision ID: jobs_0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "jobs_0001"
down_revision = None
branch_labels = ("jobs",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("datastack", sa.String(128), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tasks_total", sa.Integer(), nullable=False),
        sa.Column("tasks_done", sa.Integer(), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("scheduler", sa.String(256), nullable=True),
    )
    op.create_index("ix_jobs_kind", "jobs", ["kind"])
    op.create_index("ix_jobs_datastack", "jobs", ["datastack"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_started", "jobs", ["started"])


def downgrade() -> None:
    op.drop_table("jobs")
