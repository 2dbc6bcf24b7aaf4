"""Reads and writes of the ``prices`` table."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import prices
from pipeline.db.upsert import upsert_rows


def _clean(value: object) -> object:
    """NaN becomes NULL; NumPy scalars become Python ones."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()  # type: ignore[union-attr]
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


def upsert_prices(conn: Connection, frame: pd.DataFrame) -> int:
    """Insert or replace price rows keyed on ``(ticker, trade_date)``.

    Args:
        conn: an open connection; the caller owns the transaction.
        frame: a normalised price frame with the columns of ``columns.PRICE_COLUMNS``.

    Returns:
        The number of rows written.
    """
    if frame.empty:
        return 0
    ordered = frame.loc[:, list(c.PRICE_COLUMNS)]
    rows = [
        {name: _clean(value) for name, value in zip(c.PRICE_COLUMNS, record, strict=True)}
        for record in ordered.itertuples(index=False, name=None)
    ]
    for row in rows:
        if isinstance(row[c.TRADE_DATE], pd.Timestamp):
            row[c.TRADE_DATE] = row[c.TRADE_DATE].date()
    return upsert_rows(conn, prices, rows)


def read_closes(
    conn: Connection,
    through: dt.date,
    tickers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Closing prices on or before ``through``, ordered by ticker and date.

    Returns:
        A frame with columns ``ticker``, ``trade_date`` (``datetime.date``) and ``close``.
    """
    query = (
        sa.select(prices.c[c.TICKER], prices.c[c.TRADE_DATE], prices.c[c.CLOSE])
        .where(prices.c[c.TRADE_DATE] <= through)
        .order_by(prices.c[c.TICKER], prices.c[c.TRADE_DATE])
    )
    if tickers is not None:
        query = query.where(prices.c[c.TICKER].in_(list(tickers)))
    rows = conn.execute(query).all()
    return pd.DataFrame(rows, columns=[c.TICKER, c.TRADE_DATE, c.CLOSE])


def list_tickers(conn: Connection) -> list[str]:
    """Every ticker with at least one price, sorted."""
    query = sa.select(prices.c[c.TICKER]).distinct().order_by(prices.c[c.TICKER])
    return list(conn.execute(query).scalars())


def latest_trade_date(conn: Connection, tickers: Sequence[str] | None = None) -> dt.date | None:
    """The newest trade date among ``tickers`` (all when ``None``), or ``None`` when empty."""
    query = sa.select(sa.func.max(prices.c[c.TRADE_DATE]))
    if tickers is not None:
        query = query.where(prices.c[c.TICKER].in_(list(tickers)))
    return conn.execute(query).scalar_one_or_none()


def count_prices(conn: Connection) -> int:
    """Rows in the ``prices`` table."""
    return conn.execute(sa.select(sa.func.count()).select_from(prices)).scalar_one()
