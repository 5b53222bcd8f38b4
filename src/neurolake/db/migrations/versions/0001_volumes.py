"""volumes: datastacks and layers

Revision ID: vol_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "vol_0001"
down_revision = None
branch_labels = ("volumes",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datastacks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("voxel_size_nm", sa.JSON(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.UniqueConstraint("name", name="uq_datastacks_name"),
    )
    op.create_table(
        "layers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("datastack_id", sa.Integer(), sa.ForeignKey("datastacks.id", ondelete="CASCADE",
                                                               name="fk_layers_datastack_id_datastacks"),
                  nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("layer_type", sa.String(32), nullable=False),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.UniqueConstraint("datastack_id", "name", name="uq_layers_datastack_name"),
    )


def downgrade() -> None:
    op.drop_table("layers")
    op.drop_table("datastacks")
