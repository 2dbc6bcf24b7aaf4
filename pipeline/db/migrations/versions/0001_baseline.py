"""Baseline: prices, sequence_files, models, model_tickers, forecasts.

A new database is created from ``pipeline.db.schema.metadata`` and stamped
with the head revision, so this baseline has nothing to do: it marks the
schema of release 0.1, from which later revisions start.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-27
"""

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
