"""The forecast stage: dates, values recomputed independently, reruns, model choice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL, TINY_SEQUENCES
from helpers import synthetic_prices, table_snapshot
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.forecasts import read_forecasts
from pipeline.db.models import get_model, model_scalers
from pipeline.db.prices import upsert_prices
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.model.forecast import forecast, recursive_forecast
from pipeline.model.store import load_model
from pipeline.model.train import train
from pipeline.sequences.build import build_sequences

PRICES = synthetic_prices(("AAA", "BBB"), days=80)
DATES = [pd.Timestamp(day).date() for day in PRICES[c.TRADE_DATE].unique()]


def trained(engine: Engine, home: Path, as_of: dt.date) -> int:
    with engine.begin() as conn:
        upsert_prices(conn, PRICES)
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
        return train(conn, home, as_of, None, "auto", TINY_SEQUENCES, TINY_MODEL).version


def test_recursive_forecast_feeds_predictions_back() -> None:
    seen = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(batch[:, :, 0].copy())
        return batch[:, -1, :] + 1.0  # "tomorrow = today + 1"

    steps = recursive_forecast(predict, np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), 3)
    np.testing.assert_array_equal(steps, [[4, 5, 6], [1, 2, 3]])
    np.testing.assert_array_equal(seen[2], [[3, 4, 5], [0, 1, 2]])


def test_forecasts_cover_the_next_business_days_with_inverted_values(
    engine: Engine, home: Path
) -> None:
    as_of = DATES[59]  # a Friday: 2024-03-22
    assert as_of == dt.date(2024, 3, 22)
    version = trained(engine, home, as_of)
    with engine.begin() as conn:
        result = forecast(conn, as_of, horizon=3)
    assert (result.model_version, result.rows, result.tickers) == (version, 6, ["AAA", "BBB"])
    with engine.connect() as conn:
        rows = read_forecasts(conn, as_of)
        model_row = get_model(conn, version)
        scalers = model_scalers(conn, version)
    assert rows[c.TARGET_DATE].tolist()[:3] == [
        dt.date(2024, 3, 25),
        dt.date(2024, 3, 26),
        dt.date(2024, 3, 27),
    ]
    assert rows[c.HORIZON].tolist() == [1, 2, 3, 1, 2, 3]

    # Recompute AAA by hand from the stored model, scaler and closes.
    model = load_model(Path(model_row["file_path"]))
    params = scalers["AAA"]["scaler_params"]
    closes = PRICES.loc[PRICES[c.TICKER] == "AAA", c.CLOSE].to_numpy()[55:60]
    window = list((closes - params["min"]) / (params["max"] - params["min"]))
    expected = []
    for _ in range(3):
        value = float(
            model.predict_on_batch(np.array(window[-5:], np.float32)[None, :, None])[0, 0]
        )
        window.append(value)
        expected.append(value * (params["max"] - params["min"]) + params["min"])
    got = rows.loc[rows[c.TICKER] == "AAA", c.YHAT].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_a_rerun_writes_the_same_rows_and_a_shorter_horizon_replaces_them(
    engine: Engine, home: Path
) -> None:
    as_of = DATES[59]
    trained(engine, home, as_of)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=5)
    before = table_snapshot(engine)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=5)
    assert table_snapshot(engine) == before
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=2)
    with engine.connect() as conn:
        assert len(read_forecasts(conn, as_of)) == 4


def test_the_model_is_the_newest_trained_no_later_than_the_as_of_date(
    engine: Engine, home: Path
) -> None:
    later = trained(engine, home, DATES[64])
    with engine.begin() as conn:
        with pytest.raises(MissingDataError, match="no model trained on data up to 2024-03-22"):
            forecast(conn, DATES[59])
        with pytest.raises(ConfigurationError, match="after the as-of date"):
            forecast(conn, DATES[59], model_version=later)
        assert forecast(conn, DATES[70]).model_version == later


def test_uncovered_tickers_are_refused(engine: Engine, home: Path) -> None:
    trained(engine, home, DATES[59])
    with pytest.raises(ConfigurationError, match="does not cover MSFT"), engine.begin() as conn:
        forecast(conn, DATES[59], tickers=["AAA", "MSFT"])


def test_forecasts_skip_exchange_holidays(engine: Engine, home: Path) -> None:
    as_of = dt.date(2024, 3, 28)  # the day before Good Friday
    assert as_of in DATES
    trained(engine, home, as_of)
    with engine.begin() as conn:
        forecast(conn, as_of, horizon=2)
        rows = read_forecasts(conn, as_of)
    assert rows[c.TARGET_DATE].tolist()[:2] == [dt.date(2024, 4, 1), dt.date(2024, 4, 2)]


def test_inactive_tickers_are_not_forecast(engine: Engine, home: Path) -> None:
    from pipeline.db.tickers import add_tickers, set_active

    trained(engine, home, DATES[59])
    with engine.begin() as conn:
        add_tickers(conn, ["AAA", "BBB"], "XNYS", activate=True)
        set_active(conn, ["BBB"], False)
        assert forecast(conn, DATES[59], horizon=1).tickers == ["AAA"]
        with pytest.raises(ConfigurationError, match="BBB is inactive"):
            forecast(conn, DATES[59], tickers=["BBB"])
