"""Superseded rows: ingested_inputs.rows_superseded, valid rows that lost to another input.

Revision ID: 0011_rows_superseded
Revises: 0010_pipeline_lock
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_rows_superseded"
down_revision = "0010_pipeline_lock"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ingested_inputs",
        sa.Column(
            "rows_superseded",
            sa.Integer,
            nullable=False,
            server_default="0",
            comment="Valid rows that lost to another input's row for the same ticker and date.",
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("ingested_inputs") as batch:
        batch.drop_column("rows_superseded")
