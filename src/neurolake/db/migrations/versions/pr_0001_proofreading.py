"""proofreading: supervoxel graphs, operations, roots

Revision ID: pr_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "pr_0001"
down_revision = None
branch_labels = ("proofreading",)
depends_on = "vol_0001"


def upgrade() -> None:
    op.create_table(
        "pr_graphs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("datastack_id", sa.Integer(), sa.ForeignKey("datastacks.id", ondelete="CASCADE",
                                                               name="fk_pr_graphs_datastack_id_datastacks"),
                  nullable=False),
        sa.Column("layer", sa.String(128), nullable=True),
        sa.Column("base_path", sa.Text(), nullable=False),
        sa.Column("agglomeration", sa.String(32), nullable=False),
        sa.Column("n_supervoxels", sa.BigInteger(), nullable=False),
        sa.Column("n_edges", sa.BigInteger(), nullable=False),
        sa.Column("root_base", sa.BigInteger(), nullable=False),
        sa.Column("next_root", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.UniqueConstraint("datastack_id", name="uq_pr_graphs_datastack_id"),
    )
    op.create_table(
        "pr_operations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("graph_id", sa.Integer(), sa.ForeignKey("pr_graphs.id", ondelete="CASCADE",
                                                           name="fk_pr_operations_graph_id_pr_graphs"),
                  nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("old_roots", sa.JSON(), nullable=False),
        sa.Column("new_roots", sa.JSON(), nullable=False),
        sa.Column("edges", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("undone_by", sa.Integer(), nullable=True),
        sa.UniqueConstraint("graph_id", "seq", name="uq_pr_operations_graph_seq"),
    )
    op.create_index("ix_pr_operations_graph_id", "pr_operations", ["graph_id"])
    op.create_table(
        "pr_roots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("graph_id", sa.Integer(), sa.ForeignKey("pr_graphs.id", ondelete="CASCADE",
                                                           name="fk_pr_roots_graph_id_pr_graphs"),
                  nullable=False),
        sa.Column("root_id", sa.BigInteger(), nullable=False),
        sa.Column("created_seq", sa.Integer(), nullable=False),
        sa.Column("expired_seq", sa.Integer(), nullable=True),
        sa.Column("n_supervoxels", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("graph_id", "root_id", name="uq_pr_roots_graph_root"),
    )
    op.create_index("ix_pr_roots_graph_id", "pr_roots", ["graph_id"])


def downgrade() -> None:
    op.drop_table("pr_roots")
    op.drop_table("pr_operations")
    op.drop_table("pr_graphs")
