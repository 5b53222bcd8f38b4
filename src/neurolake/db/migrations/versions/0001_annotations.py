"""annotations: annotation table metadata

Revision ID: ann_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "ann_0001"
down_revision = None
branch_labels = ("annotations",)
depends_on = "vol_0001"


def upgrade() -> None:
    op.create_table(
        "annotation_tables",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("datastack_id", sa.Integer(),
                  sa.ForeignKey("datastacks.id", ondelete="CASCADE",
                                name="fk_annotation_tables_datastack_id_datastacks"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("schema_name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("voxel_resolution_nm", sa.JSON(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("required_points", sa.JSON(), nullable=False),
        sa.Column("segmentation_layer", sa.String(128), nullable=True),
        sa.Column("read_permission", sa.String(16), nullable=False),
        sa.Column("write_permission", sa.String(16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("next_id", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.UniqueConstraint("datastack_id", "name", name="uq_annotation_tables_datastack_name"),
    )


def downgrade() -> None:
    op.drop_table("annotation_tables")
