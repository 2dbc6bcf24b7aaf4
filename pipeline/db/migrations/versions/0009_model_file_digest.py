"""Model file digests: models.file_sha256, checked before a version's files are used.

Revision ID: 0009_model_file_digest
Revises: 0008_retention
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_model_file_digest"
down_revision = "0008_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "models",
        sa.Column(
            "file_sha256",
            sa.String(64),
            comment="SHA-256 of the model's file (or of its folder's files); checked before "
            "they are used (NULL: registered before digests were kept).",
        ),
    )


def downgrade() -> None:
    # SQLite drops a column by rebuilding the table, which its views would block; the
    # views are created again from sql/ when the schema is next ensured.
    for view in ("model_leaderboard", "forecast_accuracy", "latest_forecasts"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("file_sha256")
