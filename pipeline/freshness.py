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
from pipeline.db.schema import tickers as tickers_table
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
    newest = newest_prices(conn, as_of, tickers)
    exchanges = ticker_exchanges(conn)
    stale: dict[str, dt.date | None] = {}
    sessions: dict[str, dt.date] = {}  # per exchange: 0.26 s at 5,000 tickers one by one
    for ticker in sorted(tickers):
        exchange = exchanges.get(ticker, DEFAULT_EXCHANGE)
        if exchange not in sessions:
            sessions[exchange] = previous_session(as_of, exchange)
        expected = sessions[exchange]
        latest = newest.get(ticker)
        if latest is None or latest < expected:
            stale[ticker] = latest
    return stale


#: Tickers per statement: bound parameters stay far below every database's limit.
CHUNK = 500


def newest_prices(conn: Connection, as_of: dt.date, tickers: Sequence[str]) -> dict[str, dt.date]:
    """Each ticker's newest trade date on or before ``as_of``; tickers without one are left out.

    One seek of the ``prices`` key per ticker (``max(trade_date)`` of one ticker up
    to a date): 6 ms for 1,000 tickers on SQLite, where a ``GROUP BY ticker`` over the
    prices up to the date read every stored price (1.0 s at 1,000 tickers of 10 years,
    five times that at 5,000). The tracked tickers (the ``tickers`` table) take one
    statement per ``CHUNK`` of them, a correlated subquery each; any other ticker one
    statement of its own.
    """

    def newest_of(ticker: sa.ColumnElement[str]) -> sa.ScalarSelect[dt.date]:
        return (
            sa.select(sa.func.max(prices.c[c.TRADE_DATE]))
            .where(prices.c[c.TICKER] == ticker, prices.c[c.TRADE_DATE] <= as_of)
            .scalar_subquery()
        )

    wanted = sorted(set(tickers))
    newest: dict[str, dt.date] = {}
    tracked: set[str] = set()
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        rows = conn.execute(
            sa.select(tickers_table.c.symbol, newest_of(tickers_table.c.symbol)).where(
                tickers_table.c.symbol.in_(chunk)
            )
        ).all()
        for ticker, day in rows:
            tracked.add(ticker)
            if day is not None:
                newest[ticker] = day
    alone = sa.select(newest_of(sa.bindparam("ticker", type_=sa.String)))
    for ticker in wanted:
        if ticker not in tracked:
            day = conn.execute(alone, {"ticker": ticker}).scalar_one_or_none()
            if day is not None:
                newest[ticker] = day
    return newest


def describe_stale(stale: dict[str, dt.date | None]) -> str:
    """``AAA (newest 2024-03-01), BBB (no prices)``."""
    return ", ".join(
        f"{ticker} ({'no prices' if day is None else f'newest {day}'})"
        for ticker, day in sorted(stale.items())
    )
