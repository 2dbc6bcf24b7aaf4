"""Stale tickers: no close for the exchange's last trading day on or before the as-of date."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from helpers import synthetic_prices
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.prices import upsert_prices
from pipeline.freshness import describe_stale, stale_tickers


def test_stale_tickers_follow_the_exchange_calendar(engine: Engine) -> None:
    frame = synthetic_prices(("AAA", "BBB"), start="2024-03-18", days=9)  # to Thu 2024-03-28
    frame = frame[
        ~((frame[c.TICKER] == "BBB") & (frame[c.TRADE_DATE] > pd.Timestamp("2024-03-26")))
    ]
    with engine.begin() as conn:
        upsert_prices(conn, frame)
        # Good Friday 2024-03-29: the last trading day is Thursday; AAA is fresh.
        assert stale_tickers(conn, dt.date(2024, 3, 29), ["AAA", "BBB", "ZZZ"]) == {
            "BBB": dt.date(2024, 3, 26),
            "ZZZ": None,
        }
        # As of the Wednesday, BBB lacks Wednesday's close; AAA's later prices do not count.
        assert stale_tickers(conn, dt.date(2024, 3, 27), ["AAA", "BBB"]) == {
            "BBB": dt.date(2024, 3, 26)
        }
        assert stale_tickers(conn, dt.date(2024, 3, 26), ["AAA", "BBB"]) == {}


def test_stale_tickers_are_described_for_people() -> None:
    assert describe_stale({"BBB": dt.date(2024, 3, 26), "ZZZ": None}) == (
        "BBB (newest 2024-03-26), ZZZ (no prices)"
    )
