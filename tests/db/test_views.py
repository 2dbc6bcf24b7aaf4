"""The consumer views on SQLite, PostgreSQL and MariaDB, against hand-computed expectations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.db.schema import consumer_views, forecasts, models, prices
from pipeline.db.views import VIEWS, sync_views, view_sql

D = dt.date


@pytest.fixture
def engine(portable_engine: Engine) -> Engine:
    """Every test of this module on SQLite, PostgreSQL and MariaDB."""
    return portable_engine


def _model(version: int, promoted: bool) -> dict:
    return {
        "version": version,
        "fingerprint": f"fp{version}",
        "mode": "retrain",
        "parent_version": None,
        "trained_at": dt.datetime(2024, 1, 2, 22, tzinfo=dt.UTC),
        "data_through": D(2024, 1, 2),
        "tickers": ["AAA"],
        "hyperparameters": {"window": 3},
        "val_loss": 0.1,
        "train_samples": 10,
        "validation_samples": 2,
        "epochs_run": 1,
        "file_path": f"/m/v{version}.keras",
        "val_mase": 0.99 if promoted else 1.2,
        "promoted": promoted,
    }


def _forecast(as_of, target, horizon, version, yhat, lower=None, upper=None) -> dict:  # noqa: ANN001
    return {
        "ticker": "AAA",
        "as_of_date": as_of,
        "target_date": target,
        "model_version": version,
        "horizon": horizon,
        "yhat": yhat,
        "yhat_lower": lower,
        "yhat_upper": upper,
    }


@pytest.fixture
def loaded(engine: Engine) -> Engine:
    closes = {D(2024, 1, 2): 10.0, D(2024, 1, 3): 11.0, D(2024, 1, 4): 12.0, D(2024, 1, 5): 10.5}
    closes[D(2024, 1, 8)] = 10.0
    with engine.begin() as conn:
        conn.execute(
            sa.insert(prices),
            [
                {"ticker": "AAA", "trade_date": d, "close": v, "source": "p.csv"}
                for d, v in closes.items()
            ],
        )
        conn.execute(sa.insert(models), [_model(1, True), _model(2, False)])
        conn.execute(
            sa.insert(forecasts),
            [
                _forecast(D(2024, 1, 2), D(2024, 1, 3), 1, 1, 10.5, 10.0, 11.0),
                _forecast(D(2024, 1, 2), D(2024, 1, 4), 2, 1, 10.8, 9.0, 12.0),
                _forecast(D(2024, 1, 3), D(2024, 1, 4), 1, 1, 11.5, 11.2, 11.8),
                _forecast(D(2024, 1, 3), D(2024, 1, 5), 2, 1, 11.6),
                _forecast(D(2024, 1, 3), D(2024, 1, 4), 1, 2, 13.0),
                _forecast(D(2024, 1, 4), D(2024, 1, 8), 1, 1, 12.2),
                # As of a Saturday: the naive forecast is Friday's close.
                _forecast(D(2024, 1, 6), D(2024, 1, 8), 1, 1, 10.4),
            ],
        )
    return engine


def _rows(engine: Engine, query: str) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(query)).all()
    return [tuple(_plain(value) for value in row) for row in rows]


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str) and len(value) == 10 and value[4] == "-":
        return D.fromisoformat(value)
    return value


def test_latest_forecasts_keep_the_newest_as_of_and_the_champion(loaded: Engine) -> None:
    assert _rows(
        loaded,
        "select target_date, as_of_date, horizon, yhat, yhat_lower, model_version "
        "from latest_forecasts order by target_date",
    ) == [
        (D(2024, 1, 3), D(2024, 1, 2), 1, 10.5, 10.0, 1),
        (D(2024, 1, 4), D(2024, 1, 3), 1, 11.5, 11.2, 1),
        (D(2024, 1, 5), D(2024, 1, 3), 2, 11.6, None, 1),
        (D(2024, 1, 8), D(2024, 1, 6), 1, 10.4, None, 1),
    ]


def test_forecast_accuracy_joins_the_closes_that_arrived(loaded: Engine) -> None:
    rows = _rows(
        loaded,
        "select as_of_date, target_date, model_version, actual, naive, error, abs_error, "
        "abs_pct_error, naive_abs_error, inside_interval from forecast_accuracy "
        "order by as_of_date, target_date, model_version",
    )
    assert rows == [
        (D(2024, 1, 2), D(2024, 1, 3), 1, 11.0, 10.0, -0.5, 0.5, round(0.5 / 11, 9), 1.0, 1),
        (D(2024, 1, 2), D(2024, 1, 4), 1, 12.0, 10.0, -1.2, 1.2, 0.1, 2.0, 1),
        (D(2024, 1, 3), D(2024, 1, 4), 1, 12.0, 11.0, -0.5, 0.5, round(0.5 / 12, 9), 1.0, 0),
        (D(2024, 1, 3), D(2024, 1, 4), 2, 12.0, 11.0, 1.0, 1.0, round(1 / 12, 9), 1.0, None),
        (D(2024, 1, 3), D(2024, 1, 5), 1, 10.5, 11.0, 1.1, 1.1, round(1.1 / 10.5, 9), 0.5, None),
        (D(2024, 1, 4), D(2024, 1, 8), 1, 10.0, 12.0, 2.2, 2.2, 0.22, 2.0, None),
        (D(2024, 1, 6), D(2024, 1, 8), 1, 10.0, 10.5, 0.4, 0.4, 0.04, 0.5, None),
    ]


def test_model_leaderboard_scores_each_version_against_naive(loaded: Engine) -> None:
    rows = _rows(
        loaded,
        "select model_version, horizon, forecasts, mae, naive_mae, mase, coverage, val_mase "
        "from model_leaderboard order by model_version, horizon",
    )
    assert rows == [
        (1, 1, 4, 0.9, 1.125, 0.8, 0.5, 0.99),
        (1, 2, 2, 1.15, 1.25, 0.92, 1.0, 0.99),
        (2, 1, 1, 1.0, 1.0, 1.0, None, 1.2),
    ]


def test_views_are_recreated_only_when_their_sql_changes(engine: Engine) -> None:
    with engine.begin() as conn:
        assert sync_views(conn) == []
        conn.execute(
            sa.update(consumer_views)
            .where(consumer_views.c.name == "forecast_accuracy")
            .values(sha256="old")
        )
        # The changed view and the one that reads it; not the one before it.
        assert sync_views(conn) == ["forecast_accuracy", "model_leaderboard"]
        names = set(sa.inspect(conn).get_view_names())
    assert set(VIEWS) <= names


def test_each_view_file_describes_its_grain_and_columns() -> None:
    from pipeline.db.views import SQL_DIR

    for name in VIEWS:
        text = (SQL_DIR / f"{name}.sql").read_text()
        assert text.startswith(f"-- {name}: ")
        assert "-- Grain:" in text and "-- Columns:" in text
        assert view_sql(name).lstrip().lower().startswith("with ")


def test_every_view_column_is_documented_and_postgresql_carries_the_comments(
    engine: Engine,
) -> None:
    from pipeline.db.views import view_docs

    with engine.connect() as conn:
        for name in VIEWS:
            about, documented = view_docs(name)
            columns = [column["name"] for column in sa.inspect(conn).get_columns(name)]
            assert set(documented) == set(columns), name
            assert about and all(documented.values()), name
            if conn.dialect.name != "postgresql":
                continue
            stored = conn.execute(
                sa.text("select obj_description(cast(:v as regclass), 'pg_class')"), {"v": name}
            ).scalar_one()
            assert stored == about
            comments = dict(
                conn.execute(
                    sa.text(
                        "select attname, col_description(attrelid, attnum) from pg_attribute "
                        "where attrelid = cast(:v as regclass) and attnum > 0"
                    ),
                    {"v": name},
                ).all()
            )
            assert comments == documented
    assert view_docs("latest_forecasts")[1]["horizon"] == (
        "trading days between as_of_date and target_date"
    )
