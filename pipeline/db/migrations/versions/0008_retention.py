"""Retention: models.files_deleted_at records when a version's files were deleted.

Revision ID: 0008_retention
Revises: 0007_trading_days
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_retention"
down_revision = "0007_trading_days"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "models",
        sa.Column(
            "files_deleted_at",
            sa.DateTime(timezone=True),
            comment="When retention deleted this version's files (NULL: kept).",
        ),
    )


def downgrade() -> None:
    # SQLite drops a column by rebuilding the table, which its views would block; the
    # views are created again from sql/ when the schema is next ensured.
    for view in ("model_leaderboard", "forecast_accuracy", "latest_forecasts"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("files_deleted_at")
