"""provenance: the run store (query runs and the inputs they pinned)

Revision ID: prov_0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "prov_0001"
down_revision = None
branch_labels = ("provenance",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "query_runs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("sql", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("result_sha256", sa.String(64), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("result_file", sa.Text(), nullable=True),
        sa.Column("datastacks", sa.JSON(), nullable=False),
    )
    op.create_index("ix_query_runs_created", "query_runs", ["created"])
    op.create_index("ix_query_runs_user", "query_runs", ["user"])
    op.create_table(
        "query_run_pins",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.String(36), sa.ForeignKey("query_runs.run_id", ondelete="CASCADE",
                                                         name="fk_query_run_pins_run_id_query_runs"),
                  nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("datastack", sa.String(128), nullable=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_query_run_pins_run_id", "query_run_pins", ["run_id"])
    op.create_index("ix_query_run_pins_kind_datastack_name_version", "query_run_pins",
                    ["kind", "datastack", "name", "version"])


def downgrade() -> None:
    op.drop_table("query_run_pins")
    op.drop_table("query_runs")
