"""Writes of the quarantine (``rejected_prices``) and of ``price_flags``.

Both keep the first sighting: a row seen again (the same input, a rerun)
is not written twice, so reruns leave these tables as they were.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import price_flags, rejected_prices
from pipeline.db.upsert import bulk_upsert


def _insert_new(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows, skipping those whose unique key is already stored."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing()
    else:
        statement = mysql.insert(table).prefix_with("IGNORE")
    conn.execute(statement, [dict(row) for row in rows])


def _text(value: object, limit: int) -> str:
    """``value`` as storable text: NUL, which PostgreSQL's text refuses (the whole
    quarantine write would fail on one poison field), written as ``\\x00``."""
    return str(value).replace("\x00", "\\x00")[:limit]


def quarantine_rows(
    conn: Connection,
    rejected: pd.DataFrame,
    *,
    source: str,
    source_version: str,
    run_id: str,
    rejected_at: dt.datetime,
) -> int:
    """Store rejected rows (the ``validate`` layout) with where they came from and why."""
    rows = [
        {
            "run_id": run_id,
            "source": source,
            "source_version": source_version,
            "line": int(record.line),
            c.TICKER: _text(record.ticker, 64),
            c.TRADE_DATE: _text(record.date, 64),
            "raw": {_text(key, 256): _text(value, 2000) for key, value in dict(record.raw).items()},
            "reason_code": record.reason_code,
            "reason": _text(record.reason, 2000),
            "rejected_at": rejected_at,
        }
        for record in rejected.itertuples(index=False)
    ]
    _insert_new(conn, rejected_prices, rows)
    return len(rows)


def _keep_stored(new: Callable[[str], str], old: Callable[[str], str], dialect: str) -> str:
    """A ``ReplaceRule`` that never replaces: the first sighting of a flag stays."""
    return "1 = 0"


def record_flags(conn: Connection, flags: pd.DataFrame, *, source: str, run_id: str) -> int:
    """Store flags (the ``validate`` layout) of loaded rows; a flag already stored is kept.

    Written by ``bulk_upsert`` (a file of 1,000 tickers over a year has thousands of
    closed-day flags when its dates include holidays: 0.12 s for 7,000 through
    ``Connection.execute``, a few milliseconds this way).
    """
    if flags.empty:
        return 0
    rows = pd.DataFrame(
        {
            c.TICKER: flags[c.TICKER].to_numpy(),
            c.TRADE_DATE: pd.to_datetime(flags[c.TRADE_DATE]).to_numpy(),
            "flag": flags["flag"].to_numpy(),
            "detail": flags["detail"].astype(str).str.slice(0, 512).to_numpy(),
            "source": source,
            "run_id": run_id,
        }
    )
    bulk_upsert(conn, price_flags, rows, replace_if=_keep_stored)
    return len(rows)


def read_rejected(conn: Connection, source: str | None = None) -> pd.DataFrame:
    """Quarantined rows, optionally of one source, by source and line."""
    query = sa.select(rejected_prices).order_by(
        rejected_prices.c.source, rejected_prices.c.line, rejected_prices.c[c.TICKER]
    )
    if source is not None:
        query = query.where(rejected_prices.c.source == source)
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=rejected_prices.c.keys())


def read_flags(conn: Connection) -> pd.DataFrame:
    """Every flag, by ticker, date and flag."""
    query = sa.select(price_flags).order_by(
        price_flags.c[c.TICKER], price_flags.c[c.TRADE_DATE], price_flags.c.flag
    )
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=price_flags.c.keys())
