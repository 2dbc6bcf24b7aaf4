"""Every table of the pipeline, declared once with SQLAlchemy Core.

New databases are created from this ``MetaData``; existing ones are brought
up to date by the numbered Alembic revisions in ``pipeline/db/migrations``
(see docs/database.md, "Schema and migrations").
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
    sa.Column(c.SOURCE, sa.String(2048), comment="File name or feed URL the row was loaded from."),
    comment="Daily prices, one row per ticker and trading day.",
)
# No index on trade_date alone: lookups go by ticker first (the primary key), and
# a second index nearly doubles the cost of loading prices (benchmarks/).

sequence_files = sa.Table(
    "sequence_files",
    metadata,
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column(c.AS_OF_DATE, sa.Date, nullable=False),
    sa.Column("data_through", sa.Date, nullable=False, comment="Last close used."),
    sa.Column("window", sa.Integer, nullable=False),
    sa.Column("scaling", sa.String(32), nullable=False),
    sa.Column("validation_fraction", sa.Double, nullable=False),
    sa.Column(
        "price_field",
        sa.String(16),
        nullable=False,
        server_default="close",
        comment="close or adj_close.",
    ),
    sa.Column("scaler_params", sa.JSON, nullable=False),
    sa.Column("fit_start", sa.Date, nullable=False, comment="First close the scaler saw."),
    sa.Column("fit_end", sa.Date, nullable=False, comment="Last close the scaler saw."),
    sa.Column("train_windows", sa.Integer, nullable=False),
    sa.Column("validation_windows", sa.Integer, nullable=False),
    sa.Column("file_path", sa.String(1024), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    comment="The current Parquet file of scaled windows per ticker and its fitted scaler.",
)

price_revisions = sa.Table(
    "price_revisions",
    metadata,
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column(
        "since",
        sa.Date,
        nullable=False,
        comment="Earliest trade date written, changed or deleted on or before data_through.",
    ),
    comment="Tickers whose closes changed within the span of their sequence file "
    "(kept by triggers on prices; the sequences stage rebuilds them from every close).",
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
    sa.Column("val_loss", sa.Double, comment="Training loss on scaled validation windows."),
    sa.Column("train_through", sa.Date, comment="Last target date of the training windows."),
    sa.Column("val_mae", sa.Double, comment="One-step MAE in price units, validation span."),
    sa.Column("val_naive_mae", sa.Double, comment="The naive forecast's MAE, same points."),
    sa.Column("val_mase", sa.Double, comment="val_mae / val_naive_mae; above 1 loses to naive."),
    sa.Column(
        "promoted",
        sa.Boolean,
        nullable=False,
        server_default=sa.true(),
        comment="Became the champion: forecasts come from the newest promoted version.",
    ),
    sa.Column("decision", sa.String(1000), comment="Why it was or was not promoted."),
    sa.Column("champion_version", sa.Integer, comment="The champion it was compared with."),
    sa.Column("champion_val_mae", sa.Double, comment="That champion's MAE on the same span."),
    sa.Column(
        "val_msis",
        sa.Double,
        comment="MSIS of one-step intervals on the validation span (calibrated on it).",
    ),
    sa.Column("champion_val_msis", sa.Double, comment="That champion's MSIS on the same span."),
    sa.Column("train_samples", sa.Integer, nullable=False),
    sa.Column("validation_samples", sa.Integer, nullable=False),
    sa.Column("epochs_run", sa.Integer, nullable=False),
    sa.Column("file_path", sa.String(1024), nullable=False),
    sa.Column(
        "files_deleted_at",
        sa.DateTime(timezone=True),
        comment="When retention deleted this version's files (NULL: kept).",
    ),
    sa.Column(
        "file_sha256",
        sa.String(64),
        comment="SHA-256 of the model's file (or of its folder's files); checked before "
        "they are used (NULL: registered before digests were kept).",
    ),
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
    sa.Column("damping", sa.Double, comment="Share of the network's move kept (0: naive, 1: all)."),
    sa.Column("val_mae", sa.Double, comment="One-step MAE on the ticker's validation span."),
    sa.Column("val_naive_mae", sa.Double, comment="The naive forecast's MAE, same points."),
    sa.Column(
        "interval_q",
        sa.JSON,
        comment="Per horizon step, the conformal half-width in log-price units.",
    ),
    comment="The scaler each model version uses per ticker, to scale inputs and invert outputs.",
)

forecasts = sa.Table(
    "forecasts",
    metadata,
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column(c.AS_OF_DATE, sa.Date, primary_key=True),
    sa.Column(c.TARGET_DATE, sa.Date, primary_key=True),
    sa.Column(c.MODEL_VERSION, sa.Integer, sa.ForeignKey("models.version"), primary_key=True),
    sa.Column(
        c.HORIZON,
        sa.Integer,
        nullable=False,
        comment="Trading days (sessions of the ticker's exchange) from as_of_date to target_date.",
    ),
    sa.Column(c.YHAT, sa.Double, nullable=False, comment="Forecast close."),
    sa.Column("yhat_lower", sa.Double, comment="Lower bound of the prediction interval."),
    sa.Column("yhat_upper", sa.Double, comment="Upper bound of the prediction interval."),
    sa.Column(
        "scale",
        sa.Double,
        comment="Predicted std. dev. of log(close on target_date / last close); NULL: static.",
    ),
    sa.Column("yhat_q05", sa.Double, comment="5 % quantile of the forecast close."),
    sa.Column("yhat_q25", sa.Double, comment="25 % quantile of the forecast close."),
    sa.Column("yhat_q75", sa.Double, comment="75 % quantile of the forecast close."),
    sa.Column("yhat_q95", sa.Double, comment="95 % quantile of the forecast close."),
    comment="Forecast closes, one row per ticker, as-of date, target date and model version.",
)
sa.Index(None, forecasts.c[c.AS_OF_DATE])

tickers = sa.Table(
    "tickers",
    metadata,
    sa.Column("symbol", sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column("exchange", sa.String(16), nullable=False, comment="exchange_calendars code."),
    sa.Column("active", sa.Boolean, nullable=False, comment="Trained and forecast when true."),
    sa.Column("first_date", sa.Date, comment="First trade date stored."),
    sa.Column("last_date", sa.Date, comment="Last trade date stored."),
    comment="The tracked universe; filled on first ingest, managed by `pricecast tickers`.",
)

rejected_prices = sa.Table(
    "rejected_prices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, comment="The run that first saw the row."),
    sa.Column("source", sa.String(2048), nullable=False, comment="File path or URL."),
    sa.Column("source_version", sa.String(64), nullable=False, comment="SHA-256 of the input."),
    sa.Column("line", sa.Integer, nullable=False, comment="CSV line, or Parquet row, number."),
    sa.Column(c.TICKER, sa.String(64), nullable=False, comment="The ticker text as received."),
    sa.Column(c.TRADE_DATE, sa.String(64), nullable=False, comment="The date text as received."),
    sa.Column("raw", sa.JSON, nullable=False, comment="The row's fields as received."),
    sa.Column("reason_code", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(2000), nullable=False, comment="Every rule the row broke."),
    sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("source_version", "line", c.TICKER),
    comment="Quarantine: input rows that failed validation, with why and where from.",
)

price_flags = sa.Table(
    "price_flags",
    metadata,
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column(c.TRADE_DATE, sa.Date, primary_key=True),
    sa.Column("flag", sa.String(32), primary_key=True, comment="jump or closed_day."),
    sa.Column("detail", sa.String(512), nullable=False),
    sa.Column("source", sa.String(2048), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    comment="Loaded prices that look suspicious (splits, closed days); never dropped.",
)

ingested_inputs = sa.Table(
    "ingested_inputs",
    metadata,
    sa.Column("origin_key", sa.String(64), primary_key=True, comment="SHA-256 of origin."),
    sa.Column("origin", sa.String(2048), nullable=False, comment="File path or URL."),
    sa.Column("kind", sa.String(16), nullable=False, comment="file or feed."),
    sa.Column("version", sa.String(64), nullable=False, comment="SHA-256 of the content."),
    sa.Column(
        "status",
        sa.String(16),
        nullable=False,
        comment="loaded, rejected (unreadable) or failed (not fetched).",
    ),
    sa.Column("error", sa.String(2000), comment="Why a rejected input could not be read."),
    sa.Column("rows_read", sa.Integer, nullable=False),
    sa.Column("rows_loaded", sa.Integer, nullable=False),
    sa.Column("rows_quarantined", sa.Integer, nullable=False),
    sa.Column("rows_deferred", sa.Integer, nullable=False, comment="Dated after as_of_date."),
    sa.Column(
        "rows_superseded",
        sa.Integer,
        nullable=False,
        server_default="0",
        comment="Valid rows that lost to another input's row for the same ticker and date.",
    ),
    sa.Column(c.AS_OF_DATE, sa.Date, comment="The as-of date it was ingested with."),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    comment="Manifest: each input file or response, its content hash and its accounting.",
)

backtest_runs = sa.Table(
    "backtest_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column(c.AS_OF_DATE, sa.Date, nullable=False, comment="Last date of data used."),
    sa.Column("folds", sa.Integer, nullable=False),
    sa.Column(c.HORIZON, sa.Integer, nullable=False),
    sa.Column("test_fraction", sa.Double, nullable=False),
    sa.Column("origins", sa.String(16), nullable=False, comment="expanding or rolling."),
    sa.Column("interval_level", sa.Double, nullable=False),
    sa.Column("tickers", sa.JSON, nullable=False),
    sa.Column("models", sa.JSON, nullable=False, comment="Each model's name and parameters."),
    comment="Walk-forward backtests: one row per run.",
)

backtest_metrics = sa.Table(
    "backtest_metrics",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("backtest_runs.run_id"), primary_key=True),
    sa.Column("model", sa.String(64), primary_key=True, comment="LSTM variant or baseline."),
    sa.Column(c.TICKER, sa.String(TICKER_LENGTH), primary_key=True),
    sa.Column("fold", sa.Integer, primary_key=True),
    sa.Column(c.HORIZON, sa.Integer, primary_key=True, comment="Steps ahead, 1..horizon."),
    sa.Column("is_default", sa.Boolean, nullable=False, comment="The default LSTM config."),
    sa.Column("model_version", sa.Integer, comment="Registered version it evaluates, if any."),
    sa.Column("n", sa.Integer, nullable=False, comment="Test points."),
    sa.Column("mae", sa.Double, nullable=False),
    sa.Column("rmse", sa.Double, nullable=False),
    sa.Column("mape", sa.Double, nullable=False, comment="Percent."),
    sa.Column("mase", sa.Double, comment="MAE / the naive forecast's MAE on the same points."),
    sa.Column("coverage", sa.Double, comment="Share of points inside the interval."),
    sa.Column(
        "coverage_high_vol",
        sa.Double,
        comment="Coverage on the ticker's most volatile fifth of test days.",
    ),
    sa.Column("n_high_vol", sa.Integer, comment="Test points among those most volatile days."),
    sa.Column("width", sa.Double, comment="Mean interval width relative to the last close."),
    sa.Column(
        "interval_score",
        sa.Double,
        comment="Mean interval score (width plus 2/alpha times any miss).",
    ),
    sa.Column(
        "msis",
        sa.Double,
        comment="Interval score over the training span's mean absolute daily change.",
    ),
    sa.Column("spl", sa.Double, comment="Mean scaled pinball loss over the quantiles q05 .. q95."),
    sa.Column("spl_q05", sa.Double, comment="Scaled pinball loss of the 5 % quantile."),
    sa.Column("spl_q25", sa.Double, comment="Scaled pinball loss of the 25 % quantile."),
    sa.Column("spl_q50", sa.Double, comment="Scaled pinball loss of the median."),
    sa.Column("spl_q75", sa.Double, comment="Scaled pinball loss of the 75 % quantile."),
    sa.Column("spl_q95", sa.Double, comment="Scaled pinball loss of the 95 % quantile."),
    comment="Backtest errors per model, ticker, fold and horizon step.",
)

consumer_views = sa.Table(
    "consumer_views",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, comment="Of the SQL it was created from."),
    comment="The consumer views (sql/) in this database and the SQL each was created from.",
)

data_versions = sa.Table(
    "data_versions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True, comment="What changed, e.g. prices."),
    sa.Column("version", sa.BigInteger, nullable=False, comment="Raised by every write to it."),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    comment="A counter per kind of data, raised in the transaction of every write to it.",
)

run_states = sa.Table(
    "run_states",
    metadata,
    sa.Column(
        "run_key",
        sa.String(64),
        primary_key=True,
        comment="SHA-256 of the flow, as-of date, tickers and settings.",
    ),
    sa.Column("flow", sa.String(64), nullable=False),
    sa.Column(c.AS_OF_DATE, sa.Date, nullable=False),
    sa.Column(
        "inputs",
        sa.String(64),
        nullable=False,
        comment="SHA-256 of what the run's outputs depend on (data and model versions).",
    ),
    sa.Column("summary", sa.JSON, nullable=False, comment="What the run returned."),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    comment="The last completed run per flow, as-of date, tickers and settings.",
)

pipeline_lock = sa.Table(
    "pipeline_lock",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    comment="Holds no rows: the run that writes locks this table for its whole length "
    "(PostgreSQL LOCK TABLE in EXCLUSIVE mode, MariaDB/MySQL LOCK TABLES ... WRITE), which "
    "needs privileges a read-only role lacks (pipeline/db/lock.py).",
)


#: The triggers that keep ``price_revisions``: any insert, delete or change of a close
#: (``close`` or ``adj_close``) of a ticker on or before the ``data_through`` of its
#: sequence file records the ticker and the earliest such date, however the row was
#: written (an ingest, a bulk load, an ``UPDATE`` by hand).
PRICE_REVISION_TRIGGERS = (
    "prices_revised_insert",
    "prices_revised_update",
    "prices_revised_delete",
)


def _revision_sql(dialect: str, row: str) -> str:
    """SQL recording ``row`` (``NEW`` or ``OLD``) in ``price_revisions`` when it falls
    within its ticker's sequence file."""
    select = (
        f"SELECT {row}.ticker, {row}.trade_date FROM sequence_files AS s"
        f" WHERE s.ticker = {row}.ticker AND {row}.trade_date <= s.data_through"
    )
    if dialect in ("mysql", "mariadb"):
        return (
            f"INSERT INTO price_revisions (ticker, since) {select}"
            " ON DUPLICATE KEY UPDATE since = LEAST(since, VALUES(since));"
        )
    least = "min" if dialect == "sqlite" else "LEAST"
    return (
        f"INSERT INTO price_revisions (ticker, since) {select}"
        " ON CONFLICT (ticker) DO UPDATE"
        f" SET since = {least}(price_revisions.since, excluded.since);"
    )


def _unchanged(same: str) -> str:
    """SQL: an update left the row's key and closes as they were (``same``: the
    dialect's NULL-safe equality)."""
    return (
        f"NEW.close {same} OLD.close AND NEW.adj_close {same} OLD.adj_close"
        " AND NEW.ticker = OLD.ticker AND NEW.trade_date = OLD.trade_date"
    )


def price_revision_ddl(dialect: str) -> list[str]:
    """The statements creating the ``price_revisions`` triggers on ``dialect``."""
    if dialect == "postgresql":
        # Statement triggers over the transition tables: one statement a bulk upsert.
        # Row triggers made an upsert of 150,000 new rows 2.5 to 3 times slower.
        record = (
            "INSERT INTO price_revisions (ticker, since)"
            " SELECT r.ticker, min(r.trade_date) FROM ({rows}) AS r"
            " JOIN sequence_files AS s ON s.ticker = r.ticker AND r.trade_date <= s.data_through"
            " GROUP BY r.ticker ON CONFLICT (ticker) DO UPDATE"
            " SET since = LEAST(price_revisions.since, excluded.since);"
        )
        columns = "ticker, trade_date, close, adj_close"
        # An update records the rows whose key or closes changed, before and after.
        changed = (
            f"(SELECT {columns} FROM old_rows EXCEPT SELECT {columns} FROM new_rows)"
            f" UNION ALL (SELECT {columns} FROM new_rows EXCEPT SELECT {columns} FROM old_rows)"
        )

        def function(name: str, rows: str) -> str:
            return (
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n  {record.format(rows=rows)}\n  RETURN NULL;\nEND $$"
            )

        return [
            function("prices_revised_new", "SELECT ticker, trade_date FROM new_rows"),
            function("prices_revised_old", "SELECT ticker, trade_date FROM old_rows"),
            function("prices_revised_changed", changed),
            "CREATE TRIGGER prices_revised_insert AFTER INSERT ON prices REFERENCING NEW TABLE"
            " AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION prices_revised_new()",
            "CREATE TRIGGER prices_revised_update AFTER UPDATE ON prices REFERENCING OLD TABLE"
            " AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT"
            " EXECUTE FUNCTION prices_revised_changed()",
            "CREATE TRIGGER prices_revised_delete AFTER DELETE ON prices REFERENCING OLD TABLE"
            " AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION prices_revised_old()",
        ]
    if dialect in ("mysql", "mariadb"):
        same = _unchanged("<=>")
        return [
            "CREATE TRIGGER prices_revised_insert AFTER INSERT ON prices FOR EACH ROW BEGIN "
            f"{_revision_sql(dialect, 'NEW')} END",
            "CREATE TRIGGER prices_revised_update AFTER UPDATE ON prices FOR EACH ROW BEGIN "
            f"IF NOT ({same}) THEN {_revision_sql(dialect, 'OLD')} "
            f"{_revision_sql(dialect, 'NEW')} END IF; END",
            "CREATE TRIGGER prices_revised_delete AFTER DELETE ON prices FOR EACH ROW BEGIN "
            f"{_revision_sql(dialect, 'OLD')} END",
        ]
    # SQLite: INSERT ... SELECT ... ON CONFLICT needs the SELECT's WHERE, which it has.
    same = _unchanged("IS")
    return [
        "CREATE TRIGGER prices_revised_insert AFTER INSERT ON prices BEGIN "
        f"{_revision_sql(dialect, 'NEW')} END",
        f"CREATE TRIGGER prices_revised_update AFTER UPDATE ON prices WHEN NOT ({same}) BEGIN "
        f"{_revision_sql(dialect, 'OLD')} {_revision_sql(dialect, 'NEW')} END",
        "CREATE TRIGGER prices_revised_delete AFTER DELETE ON prices BEGIN "
        f"{_revision_sql(dialect, 'OLD')} END",
    ]


def price_revision_drop_ddl(dialect: str) -> list[str]:
    """The statements dropping the ``price_revisions`` triggers on ``dialect``."""
    drops = [
        f"DROP TRIGGER IF EXISTS {name}" + (" ON prices" if dialect == "postgresql" else "")
        for name in PRICE_REVISION_TRIGGERS
    ]
    if dialect == "postgresql":
        drops += [
            f"DROP FUNCTION IF EXISTS {name}()"
            for name in ("prices_revised_new", "prices_revised_old", "prices_revised_changed")
        ]
    return drops


@sa.event.listens_for(metadata, "after_create")
def _create_price_revision_triggers(
    target: sa.MetaData, connection: sa.Connection, **_: object
) -> None:
    """A new database gets the triggers with its tables (``create_all``)."""
    for statement in price_revision_ddl(connection.dialect.name):
        connection.exec_driver_sql(statement)
