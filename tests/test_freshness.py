"""Stale tickers: no close for the exchange's last trading day on or before the as-of date."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import synthetic_prices
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline import freshness
from pipeline.db.prices import upsert_prices
from pipeline.db.schema import prices
from pipeline.db.tickers import add_tickers
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


@pytest.mark.parametrize("chunk", [1, 2, 500])
def test_newest_prices_of_tracked_and_untracked_tickers(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Tracked tickers are read in chunks of ``CHUNK`` (a correlated subquery each), the
    others one by one: the same newest dates as a ``GROUP BY`` over every price."""
    monkeypatch.setattr(freshness, "CHUNK", chunk)
    frame = synthetic_prices(("AAA", "BBB", "CCC", "DDD"), start="2024-03-18", days=9)
    frame = frame[
        ~((frame[c.TICKER] == "BBB") & (frame[c.TRADE_DATE] > pd.Timestamp("2024-03-22")))
        & ~((frame[c.TICKER] == "DDD") & (frame[c.TRADE_DATE] < pd.Timestamp("2024-03-27")))
    ]
    with engine.begin() as conn:
        upsert_prices(conn, frame)
        add_tickers(conn, ["AAA", "BBB", "DDD", "EEE"], "XNYS", activate=True)  # not CCC
        wanted = ["DDD", "AAA", "BBB", "CCC", "EEE", "ZZZ"]
        for as_of in (dt.date(2024, 3, 29), dt.date(2024, 3, 25), dt.date(2024, 3, 1)):
            expected = dict(
                conn.execute(
                    sa.select(prices.c[c.TICKER], sa.func.max(prices.c[c.TRADE_DATE]))
                    .where(prices.c[c.TICKER].in_(wanted), prices.c[c.TRADE_DATE] <= as_of)
                    .group_by(prices.c[c.TICKER])
                ).all()
            )
            assert freshness.newest_prices(conn, as_of, wanted) == expected
        assert freshness.newest_prices(conn, dt.date(2024, 3, 29), wanted) == {
            "AAA": dt.date(2024, 3, 28),
            "BBB": dt.date(2024, 3, 22),
            "CCC": dt.date(2024, 3, 28),
            "DDD": dt.date(2024, 3, 28),
        }
        assert stale_tickers(conn, dt.date(2024, 3, 29), wanted) == {
            "BBB": dt.date(2024, 3, 22),
            "EEE": None,
            "ZZZ": None,
        }
