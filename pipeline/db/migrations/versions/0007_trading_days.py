"""forecasts.horizon is documented as trading days (its comment said business days,
while the forecasts count the sessions of the ticker's exchange calendar).

SQLite keeps no column comments, so there is nothing to change there.

Revision ID: 0007_trading_days
Revises: 0006_interval_metrics
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_trading_days"
down_revision = "0006_interval_metrics"
branch_labels = None
depends_on = None

OLD = "Business days after as_of_date."
NEW = "Trading days (sessions of the ticker's exchange) from as_of_date to target_date."


def _comment(comment: str, existing: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "forecasts",
        "horizon",
        existing_type=sa.Integer(),
        existing_nullable=False,
        comment=comment,
        existing_comment=existing,
    )


def upgrade() -> None:
    _comment(NEW, OLD)


def downgrade() -> None:
    _comment(OLD, NEW)
