"""Data freshness: which tickers lack the close of the last trading day.

A ticker is **stale** as of a date when its newest stored price is older
than its exchange's last trading day on or before that date (or it has no
price at all). The daily flow reports stale tickers in its summary and, by
the ``stale_policy`` setting, forecasts the fresh tickers only (``skip``) or
fails (``fail``): it never forecasts from stale data silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import prices
from pipeline.db.tickers import ticker_exchanges
from pipeline.trading_calendar import DEFAULT_EXCHANGE, previous_session

STALE_POLICIES = ("skip", "fail")


def stale_tickers(
    conn: Connection, as_of: dt.date, tickers: Sequence[str]
) -> dict[str, dt.date | None]:
    """Each stale ticker among ``tickers`` and its newest price date (``None``: no price).

    Only prices on or before ``as_of`` count.
    """
    if not tickers:
        return {}
    newest = dict(
        conn.execute(
            sa.select(prices.c[c.TICKER], sa.func.max(prices.c[c.TRADE_DATE]))
            .where(prices.c[c.TICKER].in_(list(tickers)), prices.c[c.TRADE_DATE] <= as_of)
            .group_by(prices.c[c.TICKER])
        ).all()
    )
    exchanges = ticker_exchanges(conn)
    stale: dict[str, dt.date | None] = {}
    for ticker in sorted(tickers):
        expected = previous_session(as_of, exchanges.get(ticker, DEFAULT_EXCHANGE))
        latest = newest.get(ticker)
        if latest is None or latest < expected:
            stale[ticker] = latest
    return stale


def describe_stale(stale: dict[str, dt.date | None]) -> str:
    """``AAA (newest 2024-03-01), BBB (no prices)``."""
    return ", ".join(
        f"{ticker} ({'no prices' if day is None else f'newest {day}'})"
        for ticker, day in sorted(stale.items())
    )
