"""The pipeline lock's table: a run locks it instead of taking an advisory lock, which
any role could take (and so block every writer).

Revision ID: 0010_pipeline_lock
Revises: 0009_model_file_digest
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_pipeline_lock"
down_revision = "0009_model_file_digest"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_lock",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("id", name="pk_pipeline_lock"),
        comment="Holds no rows: the run that writes locks this table for its whole length "
        "(PostgreSQL LOCK TABLE in EXCLUSIVE mode, MariaDB/MySQL LOCK TABLES ... WRITE), "
        "which needs privileges a read-only role lacks (pipeline/db/lock.py).",
    )


def downgrade() -> None:
    op.drop_table("pipeline_lock")
