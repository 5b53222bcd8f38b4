"""registry: feature tables

Revision ID: reg_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "reg_0001"
down_revision = None
branch_labels = ("registry",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_tables",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("datastack", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("snapshot_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("time_range", sa.JSON(), nullable=True),
        sa.Column("materialization_version", sa.Integer(), nullable=True),
        sa.Column("owner_team", sa.String(128), nullable=False),
        sa.Column("owner_person", sa.String(128), nullable=False),
        sa.Column("invalidation_radius_nm", sa.Float(), nullable=True),
        sa.Column("licence", sa.Text(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("citation", sa.Text(), nullable=False),
        sa.Column("references", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deprecation", sa.Text(), nullable=False),
        sa.Column("derived_from", sa.JSON(), nullable=False),
        sa.Column("superseded_by", sa.String(128), nullable=True),
        sa.Column("partition_columns", sa.JSON(), nullable=False),
        sa.Column("hash_functions", sa.JSON(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("column_names", sa.Text(), nullable=False),
        sa.Column("tags_text", sa.Text(), nullable=False),
        sa.UniqueConstraint("datastack", "name", name="uq_feature_tables_datastack"),
    )
    op.create_index("ix_feature_tables_name", "feature_tables", ["name"])
    op.create_index("ix_feature_tables_datastack", "feature_tables", ["datastack"])
    op.create_index("ix_feature_tables_status", "feature_tables", ["status"])
    op.create_index("ix_feature_tables_materialization_version", "feature_tables", ["materialization_version"])


def downgrade() -> None:
    op.drop_table("feature_tables")
