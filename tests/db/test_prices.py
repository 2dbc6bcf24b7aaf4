"""``read_closes`` and ``read_close_arrays`` on SQLite, PostgreSQL and MariaDB.

Both read the driver's cursor directly (no SQLAlchemy type processing), so each
dialect's own date values (ISO text from SQLite, ``date`` elsewhere) must come
out the same.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.prices import (
    list_tickers,
    read_close_arrays,
    read_closes,
    tickers_with_prices,
    upsert_prices,
)

NAN = np.nan
DAYS = [dt.date(2024, 2, 27), dt.date(2024, 2, 28), dt.date(2024, 2, 29), dt.date(2024, 3, 1)]


@pytest.fixture
def engine(portable_engine: Engine) -> Engine:
    """Every test of this module on SQLite, PostgreSQL and MariaDB, with prices of three tickers:
    ``BBB`` with adjusted closes on every day, ``AAA`` lacking one, ``CCC`` with none."""
    rows = []
    for number, day in enumerate(DAYS):
        rows.append(("BBB", day, 20.0 + number, 10.0 + number))
        rows.append(("AAA", day, 100.5 + number, NAN if number == 2 else 50.0 + number))
        if number < 2:
            rows.append(("CCC", day, 7.25 * (number + 1), NAN))
    frame = pd.DataFrame(rows, columns=[c.TICKER, c.TRADE_DATE, c.CLOSE, c.ADJ_CLOSE])
    frame[c.TRADE_DATE] = pd.to_datetime(frame[c.TRADE_DATE])
    for name in (c.OPEN, c.HIGH, c.LOW, c.VOLUME):
        frame[name] = NAN
    frame[c.SOURCE] = "prices.csv"
    with portable_engine.begin() as conn:
        upsert_prices(conn, frame[list(c.PRICE_COLUMNS)])
    return portable_engine


def test_closes_come_ordered_with_python_dates(engine: Engine) -> None:
    with engine.connect() as conn:
        frame = read_closes(conn, DAYS[2])
    assert list(frame.columns) == [c.TICKER, c.TRADE_DATE, c.CLOSE]
    assert frame[c.TICKER].tolist() == ["AAA"] * 3 + ["BBB"] * 3 + ["CCC"] * 2
    assert frame[c.TRADE_DATE].tolist() == DAYS[:3] + DAYS[:3] + DAYS[:2]
    assert all(type(day) is dt.date for day in frame[c.TRADE_DATE])
    assert frame[c.CLOSE].tolist() == [100.5, 101.5, 102.5, 20.0, 21.0, 22.0, 7.25, 14.5]


def test_arrays_hold_the_same_closes_and_split_into_one_run_per_ticker(engine: Engine) -> None:
    with engine.connect() as conn:
        arrays = read_close_arrays(conn, DAYS[-1], ["CCC", "AAA"])
    assert arrays.dates.dtype == np.dtype("datetime64[D]")
    assert arrays.dates.tolist() == DAYS + DAYS[:2]
    runs = {ticker: arrays.closes[rows].tolist() for ticker, rows in arrays.runs()}
    assert runs == {"AAA": [100.5, 101.5, 102.5, 103.5], "CCC": [7.25, 14.5]}


def test_since_and_through_bound_the_dates(engine: Engine) -> None:
    with engine.connect() as conn:
        frame = read_closes(conn, DAYS[2], ["BBB"], since=DAYS[1])
    assert frame[c.TRADE_DATE].tolist() == DAYS[1:3]
    assert frame[c.CLOSE].tolist() == [21.0, 22.0]


def test_adjusted_closes_only_where_a_ticker_has_them_every_day(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.connect() as conn:
        frame = read_closes(conn, DAYS[-1], field=c.ADJ_CLOSE)
    by_ticker = frame.groupby(c.TICKER)[c.CLOSE].apply(list).to_dict()
    assert by_ticker == {
        "AAA": [100.5, 101.5, 102.5, 103.5],  # one adjusted close missing: its closes
        "BBB": [10.0, 11.0, 12.0, 13.0],
        "CCC": [7.25, 14.5],
    }
    warned = {record.getMessage().split()[0] for record in caplog.records}
    assert warned == {"AAA", "CCC"}


def test_nothing_to_read_gives_empty_columns(engine: Engine) -> None:
    with engine.connect() as conn:
        frame = read_closes(conn, dt.date(2000, 1, 1))
        arrays = read_close_arrays(conn, DAYS[-1], ["ZZZ"])
    assert frame.empty and list(frame.columns) == [c.TICKER, c.TRADE_DATE, c.CLOSE]
    assert len(arrays) == 0 and list(arrays.runs()) == []


def test_a_field_other_than_close_or_adj_close_is_refused(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(ValueError, match="close or adj_close"):
        read_closes(conn, DAYS[-1], field="open")
    with engine.connect() as conn, pytest.raises(ValueError, match="close only"):
        read_closes(conn, DAYS[-1], field=c.ADJ_CLOSE, since=DAYS[0])


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_reading_a_few_rows_at_a_time_gives_the_same_arrays(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Slices of the cursor that end inside a ticker's run, or on its edge, join into
    the arrays of one read; each run's rows share one ticker string."""
    import pipeline.db.prices as prices_module

    with engine.connect() as conn:
        whole = read_close_arrays(conn, DAYS[-1], field=c.ADJ_CLOSE)
        monkeypatch.setattr(prices_module, "READ_CHUNK_ROWS", chunk)
        sliced = read_close_arrays(conn, DAYS[-1], field=c.ADJ_CLOSE)
    assert len(whole) == len(sliced) == 10
    assert sliced.tickers.tolist() == whole.tickers.tolist()
    np.testing.assert_array_equal(sliced.dates, whole.dates)
    np.testing.assert_array_equal(sliced.closes, whole.closes)
    assert [ticker for ticker, _ in sliced.runs()] == ["AAA", "BBB", "CCC"]
    for _, rows in whole.runs():
        assert len({id(ticker) for ticker in whole.tickers[rows]}) == 1


def test_tickers_with_prices_are_those_listed_in_the_same_order(engine: Engine) -> None:
    """The loose index scan (one key seek a ticker) finds what reading every key finds,
    in the database's order, before and after a ticker sorting between the others."""
    with engine.connect() as conn:
        assert tickers_with_prices(conn) == list_tickers(conn) == ["AAA", "BBB", "CCC"]
    frame = pd.DataFrame(
        {
            c.TICKER: ["BA", "BRK.B"],
            c.TRADE_DATE: pd.to_datetime([DAYS[0], DAYS[1]]),
            c.OPEN: NAN,
            c.HIGH: NAN,
            c.LOW: NAN,
            c.CLOSE: [1.0, 2.0],
            c.ADJ_CLOSE: NAN,
            c.VOLUME: NAN,
            c.SOURCE: "more.csv",
        }
    )
    with engine.begin() as conn:
        upsert_prices(conn, frame[list(c.PRICE_COLUMNS)])
    with engine.connect() as conn:
        found = tickers_with_prices(conn)
        assert found == list_tickers(conn)
        assert found == ["AAA", "BA", "BBB", "BRK.B", "CCC"]
