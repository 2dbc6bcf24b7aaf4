"""Consumer views: the consumer_views table records which SQL each view in sql/
was created from; the views themselves are (re)created by pipeline.db.views
after every upgrade, like repeatable migrations.

Revision ID: 0004_consumer_views
Revises: 0003_champion_intervals
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_consumer_views"
down_revision = "0003_champion_intervals"
branch_labels = None
depends_on = None

VIEWS = ("model_leaderboard", "forecast_accuracy", "latest_forecasts")


def upgrade() -> None:
    op.create_table(
        "consumer_views",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column(
            "sha256", sa.String(64), nullable=False, comment="Of the SQL it was created from."
        ),
        sa.PrimaryKeyConstraint("name", name="pk_consumer_views"),
        comment="The consumer views (sql/) in this database and the SQL each was created from.",
    )


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("consumer_views")
