"""access: users, tokens, roles, usage, audit, secrets

Revision ID: acc_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "acc_0001"
down_revision = None
branch_labels = ("access",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("quota_requests", sa.BigInteger(), nullable=True),
        sa.Column("quota_period_s", sa.Integer(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_access_users_name"),
    )
    op.create_table(
        "access_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("access_users.id", ondelete="CASCADE",
                                                          name="fk_access_tokens_user_id_access_users"),
                  nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("token_hash", name="uq_access_tokens_token_hash"),
    )
    op.create_table(
        "access_roles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("access_users.id", ondelete="CASCADE",
                                                          name="fk_access_roles_user_id_access_users"),
                  nullable=False),
        sa.Column("datastack", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.UniqueConstraint("user_id", "datastack", name="uq_access_roles_user_id"),
    )
    op.create_table(
        "access_usage",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("user_name", "window_start", name="uq_access_usage_user_name"),
    )
    op.create_table(
        "access_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("datastack", sa.String(128), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_access_audit_time", "access_audit", ["time"])
    op.create_index("ix_access_audit_action", "access_audit", ["action"])
    op.create_table(
        "access_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for t in ("access_secrets", "access_audit", "access_usage", "access_roles", "access_tokens", "access_users"):
        op.drop_table(t)
