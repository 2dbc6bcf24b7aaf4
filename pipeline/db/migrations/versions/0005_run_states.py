"""Change detection: data_versions counts writes to prices; run_states records the
inputs of the last completed daily run per as-of date, so a rerun with nothing new
returns at once.

Revision ID: 0005_run_states
Revises: 0004_consumer_views
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_run_states"
down_revision = "0004_consumer_views"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_versions",
        sa.Column("name", sa.String(64), nullable=False, comment="What changed, e.g. prices."),
        sa.Column(
            "version", sa.BigInteger, nullable=False, comment="Raised by every write to it."
        ),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_data_versions"),
        comment="A counter per kind of data, raised in the transaction of every write to it.",
    )
    op.create_table(
        "run_states",
        sa.Column(
            "run_key",
            sa.String(64),
            nullable=False,
            comment="SHA-256 of the flow, as-of date, tickers and settings.",
        ),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("as_of_date", sa.Date, nullable=False),
        sa.Column(
            "inputs",
            sa.String(64),
            nullable=False,
            comment="SHA-256 of what the run's outputs depend on (data and model versions).",
        ),
        sa.Column("summary", sa.JSON, nullable=False, comment="What the run returned."),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_key", name="pk_run_states"),
        comment="The last completed run per flow, as-of date, tickers and settings.",
    )


def downgrade() -> None:
    op.drop_table("run_states")
    op.drop_table("data_versions")
