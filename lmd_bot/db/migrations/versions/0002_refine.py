"""SDXL refinement: whether a job's image is refined, and which job's image a ✨ Refine job
refines (instead of rendering its round again).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("refine", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("refine_of", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_jobs_refine_of", "jobs", ["refine_of"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_jobs_refine_of", ["refine_of"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_refine_of")
        batch.drop_constraint("fk_jobs_refine_of", type_="foreignkey")
        batch.drop_column("refine_of")
        batch.drop_column("refine")
