"""Rounds rendered as a grid of candidates: how many seeds a round's render shows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rounds were single images.
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("candidates", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("candidates")
