"""volumes: change tokens of lakes on object storage

Revision ID: vol_0002
Revises: vol_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "vol_0002"
down_revision = "vol_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_tokens",
        sa.Column("name", sa.String(1024), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("change_tokens")
