"""price_revisions: tickers whose closes changed within the span of their sequence file,
kept by triggers on prices, so the sequences stage reads only the closes after a
file's span for the others (and keeps the rest from the file).

Revision ID: 0013_price_revisions
Revises: 0012_trust_manifest_failed
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from pipeline.db.schema import price_revision_ddl, price_revision_drop_ddl

revision = "0013_price_revisions"
down_revision = "0012_trust_manifest_failed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "price_revisions",
        sa.Column("ticker", sa.String(16), nullable=False),
        sa.Column(
            "since",
            sa.Date,
            nullable=False,
            comment="Earliest trade date written, changed or deleted on or before data_through.",
        ),
        sa.PrimaryKeyConstraint("ticker", name="pk_price_revisions"),
        comment="Tickers whose closes changed within the span of their sequence file "
        "(kept by triggers on prices; the sequences stage rebuilds them from every close).",
    )
    for statement in price_revision_ddl(op.get_bind().dialect.name):
        op.execute(statement)
    # Closes changed before the triggers existed went unrecorded: every file recorded so
    # far is rebuilt from every close once, as before this revision.
    op.execute(
        "INSERT INTO price_revisions (ticker, since) SELECT ticker, fit_start FROM sequence_files"
    )


def downgrade() -> None:
    for statement in price_revision_drop_ddl(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("price_revisions")
