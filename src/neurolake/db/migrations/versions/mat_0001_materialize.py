"""materialize: materialization versions

Revision ID: mat_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "mat_0001"
down_revision = None
branch_labels = ("materialize",)
depends_on = "vol_0001"


def upgrade() -> None:
    op.create_table(
        "mat_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("datastack_id", sa.Integer(), sa.ForeignKey("datastacks.id", ondelete="CASCADE",
                                                               name="fk_mat_versions_datastack_id_datastacks"),
                  nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("time_stamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_on", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("tables", sa.JSON(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.UniqueConstraint("datastack_id", "version", name="uq_mat_versions_datastack_version"),
    )
    op.create_index("ix_mat_versions_datastack_id", "mat_versions", ["datastack_id"])


def downgrade() -> None:
    op.drop_table("mat_versions")
