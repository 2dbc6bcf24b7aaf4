"""Every table of the pipeline, declared once with SQLAlchemy Core.

New databases are created from this ``MetaData``; existing ones are brought
up to date by the numbered Alembic revisions in ``pipeline/db/migrations``
(see the README, "Schema and migrations").
"""

from __future__ import annotations

import sqlalchemy as sa

from pipeline import columns as c

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

TICKER_LENGTH = 16

prices = sa.Table(
    "prices",
    metadata,
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column(c.TRADE_DATE, sa.Date, primary_key=True),
    sa.Column(c.OPEN, sa.Double),
    sa.Column(c.HIGH, sa.Double),
    sa.Column(c.LOW, sa.Double),
    sa.Column(c.CLOSE, sa.Double, nullable=False),
    sa.Column(c.ADJ_CLOSE, sa.Double),
    sa.Column(c.VOLUME, sa.Double),
    sa.Column(c.SOURCE, sa.String(512), comment="File the row was last loaded from."),
    comment="Daily prices, one row per ticker and trading day.",
)
sa.Index(None, prices.c[c.TRADE_DATE])

sequence_files = sa.Table(
    "sequence_files",
    metadata,
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column(c.AS_OF_DATE, sa.Date, nullable=False),
    sa.Column("data_through", sa.Date, nullable=False, comment="Last close used."),
    sa.Column("window", sa.Integer, nullable=False),
    sa.Column("scaling", sa.String(32), nullable=False),
    sa.Column("validation_fraction", sa.Double, nullable=False),
    sa.Column("scaler_params", sa.JSON, nullable=False),
    sa.Column("fit_start", sa.Date, nullable=False, comment="First close the scaler saw."),
    sa.Column("fit_end", sa.Date, nullable=False, comment="Last close the scaler saw."),
    sa.Column("train_windows", sa.Integer, nullable=False),
    sa.Column("validation_windows", sa.Integer, nullable=False),
    sa.Column("file_path", sa.String(1024), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    comment="The current Parquet file of scaled windows per ticker and its fitted scaler.",
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("parent_version", sa.Integer, sa.ForeignKey("models.version")),
    sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("data_through", sa.Date, nullable=False),
    sa.Column("tickers", sa.JSON, nullable=False),
    sa.Column("hyperparameters", sa.JSON, nullable=False),
    sa.Column("val_loss", sa.Double, comment="Mean squared error on scaled validation windows."),
    sa.Column("train_samples", sa.Integer, nullable=False),
    sa.Column("validation_samples", sa.Integer, nullable=False),
    sa.Column("epochs_run", sa.Integer, nullable=False),
    sa.Column("file_path", sa.String(1024), nullable=False),
    comment="Registry of trained model versions.",
)

model_tickers = sa.Table(
    "model_tickers",
    metadata,
    sa.Column(c.MODEL_VERSION, sa.Integer, sa.ForeignKey("models.version"), primary_key=True),
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column("scaling", sa.String(32), nullable=False),
    sa.Column("scaler_params", sa.JSON, nullable=False),
    sa.Column("fit_start", sa.Date, nullable=False),
    sa.Column("fit_end", sa.Date, nullable=False),
    comment="The scaler each model version uses per ticker, to scale inputs and invert outputs.",
)

forecasts = sa.Table(
    "forecasts",
    metadata,
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column(c.AS_OF_DATE, sa.Date, primary_key=True),
    sa.Column(c.TARGET_DATE, sa.Date, primary_key=True),
    sa.Column(c.MODEL_VERSION, sa.Integer, sa.ForeignKey("models.version"), primary_key=True),
    sa.Column(c.HORIZON, sa.Integer, nullable=False, comment="Business days after as_of_date."),
    sa.Column(c.YHAT, sa.Double, nullable=False, comment="Forecast close."),
    comment="Forecast closes, one row per ticker, as-of date, target date and model version.",
)
sa.Index(None, forecasts.c[c.AS_OF_DATE])
