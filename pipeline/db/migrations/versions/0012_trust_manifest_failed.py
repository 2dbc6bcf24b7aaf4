"""The manifest records failed fetches: ingested_inputs.status is loaded, rejected or failed.

Only the column's comment changes (databases that keep comments: PostgreSQL, MariaDB).

Revision ID: 0012_trust_manifest_failed
Revises: 0011_rows_superseded
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_trust_manifest_failed"
down_revision = "0011_rows_superseded"
branch_labels = None
depends_on = None

_BEFORE = "loaded or rejected."
_AFTER = "loaded, rejected (unreadable) or failed (not fetched)."


def _comment(comment: str, previous: str) -> None:
    if not op.get_bind().dialect.supports_comments:
        return
    op.alter_column(
        "ingested_inputs",
        "status",
        existing_type=sa.String(16),
        existing_nullable=False,
        comment=comment,
        existing_comment=previous,
    )


def upgrade() -> None:
    _comment(_AFTER, _BEFORE)


def downgrade() -> None:
    _comment(_BEFORE, _AFTER)
