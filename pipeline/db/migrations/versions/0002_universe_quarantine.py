"""Universe, quarantine, flags and manifest: tickers, rejected_prices, price_flags,
ingested_inputs; sequence_files.price_field; prices.source widened for feed URLs and
its trade_date index dropped (it doubled load times; lookups go by ticker first).
Existing prices fill the tickers table (active, on XNYS).

Revision ID: 0002_universe_quarantine
Revises: 0001_baseline
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_universe_quarantine"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tickers",
        sa.Column("symbol", sa.String(16), primary_key=True),
        sa.Column("exchange", sa.String(16), nullable=False, comment="exchange_calendars code."),
        sa.Column("active", sa.Boolean, nullable=False, comment="Trained and forecast when true."),
        sa.Column("first_date", sa.Date, comment="First trade date stored."),
        sa.Column("last_date", sa.Date, comment="Last trade date stored."),
        sa.PrimaryKeyConstraint("symbol", name="pk_tickers"),
        comment="The tracked universe; filled on first ingest, managed by `pricecast tickers`.",
    )
    op.create_table(
        "rejected_prices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(64), nullable=False, comment="The run that first saw the row."
        ),
        sa.Column("source", sa.String(2048), nullable=False, comment="File path or URL."),
        sa.Column("source_version", sa.String(64), nullable=False, comment="SHA-256 of the input."),
        sa.Column("line", sa.Integer, nullable=False, comment="CSV line, or Parquet row, number."),
        sa.Column("ticker", sa.String(64), nullable=False, comment="The ticker text as received."),
        sa.Column(
            "trade_date", sa.String(64), nullable=False, comment="The date text as received."
        ),
        sa.Column("raw", sa.JSON, nullable=False, comment="The row's fields as received."),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(2000), nullable=False, comment="Every rule the row broke."),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_prices"),
        sa.UniqueConstraint(
            "source_version",
            "line",
            "ticker",
            name="uq_rejected_prices_source_version_line_ticker",
        ),
        comment="Quarantine: input rows that failed validation, with why and where from.",
    )
    op.create_table(
        "price_flags",
        sa.Column("ticker", sa.String(16), primary_key=True),
        sa.Column("trade_date", sa.Date, primary_key=True),
        sa.Column("flag", sa.String(32), primary_key=True, comment="jump or closed_day."),
        sa.Column("detail", sa.String(512), nullable=False),
        sa.Column("source", sa.String(2048), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("ticker", "trade_date", "flag", name="pk_price_flags"),
        comment="Loaded prices that look suspicious (splits, closed days); never dropped.",
    )
    op.create_table(
        "ingested_inputs",
        sa.Column("origin_key", sa.String(64), primary_key=True, comment="SHA-256 of origin."),
        sa.Column("origin", sa.String(2048), nullable=False, comment="File path or URL."),
        sa.Column("kind", sa.String(16), nullable=False, comment="file or feed."),
        sa.Column("version", sa.String(64), nullable=False, comment="SHA-256 of the content."),
        sa.Column("status", sa.String(16), nullable=False, comment="loaded or rejected."),
        sa.Column("error", sa.String(2000), comment="Why a rejected input could not be read."),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("rows_loaded", sa.Integer, nullable=False),
        sa.Column("rows_quarantined", sa.Integer, nullable=False),
        sa.Column("rows_deferred", sa.Integer, nullable=False, comment="Dated after as_of_date."),
        sa.Column("as_of_date", sa.Date, comment="The as-of date it was ingested with."),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("origin_key", name="pk_ingested_inputs"),
        comment="Manifest: each input file or response, its content hash and its accounting.",
    )
    op.drop_index("ix_prices_trade_date", table_name="prices")
    with op.batch_alter_table("prices") as batch:
        batch.alter_column(
            "source",
            existing_type=sa.String(512),
            type_=sa.String(2048),
            existing_comment="File the row was last loaded from.",
            comment="File name or feed URL the row was loaded from.",
        )
    with op.batch_alter_table("sequence_files") as batch:
        batch.add_column(
            sa.Column(
                "price_field",
                sa.String(16),
                nullable=False,
                server_default="close",
                comment="close or adj_close.",
            )
        )
    op.execute(
        "INSERT INTO tickers (symbol, exchange, active, first_date, last_date) "
        "SELECT ticker, 'XNYS', TRUE, MIN(trade_date), MAX(trade_date) FROM prices GROUP BY ticker"
    )


def downgrade() -> None:
    with op.batch_alter_table("prices") as batch:
        batch.alter_column("source", existing_type=sa.String(2048), type_=sa.String(512))
    op.create_index("ix_prices_trade_date", "prices", ["trade_date"])
    with op.batch_alter_table("sequence_files") as batch:
        batch.drop_column("price_field")
    for table in ("ingested_inputs", "price_flags", "rejected_prices", "tickers"):
        op.drop_table(table)
