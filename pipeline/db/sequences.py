"""Reads and writes of the ``sequence_files`` table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import PRICE_REVISION_TRIGGERS, price_revisions, sequence_files
from pipeline.db.upsert import upsert_rows


def upsert_sequence_files(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Record the current sequence file of each ticker in ``rows``."""
    return upsert_rows(conn, sequence_files, rows)


def read_sequence_files(
    conn: Connection, as_of: dt.date, tickers: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The sequence files built as of ``as_of``, ordered by ticker."""
    query = (
        sa.select(sequence_files)
        .where(sequence_files.c[c.AS_OF_DATE] == as_of)
        .order_by(sequence_files.c[c.TICKER])
    )
    if tickers is not None:
        query = query.where(sequence_files.c[c.TICKER].in_(list(tickers)))
    return [dict(row) for row in conn.execute(query).mappings()]


def current_sequence_files(
    conn: Connection, tickers: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Each ticker's recorded sequence file, whatever its as-of date, by ticker."""
    query = sa.select(sequence_files)
    if tickers is not None:
        query = query.where(sequence_files.c[c.TICKER].in_(list(tickers)))
    return {row[c.TICKER]: dict(row) for row in conn.execute(query).mappings()}


def price_revisions_of(conn: Connection) -> dict[str, dt.date]:
    """Tickers whose closes changed within their sequence file's span since it was built
    (kept by triggers on ``prices``, ``schema.price_revision_ddl``): the earliest date."""
    query = sa.select(price_revisions.c[c.TICKER], price_revisions.c.since)
    return {ticker: _date(since) for ticker, since in conn.execute(query)}


def clear_price_revisions(conn: Connection, tickers: Sequence[str]) -> None:
    """Forget the revisions of ``tickers``, whose files were rebuilt from every close."""
    if tickers:
        conn.execute(
            sa.delete(price_revisions).where(price_revisions.c[c.TICKER].in_(list(tickers)))
        )


def _date(value: Any) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def revision_triggers_present(conn: Connection) -> bool:
    """Whether every trigger keeping ``price_revisions`` is on ``prices`` (a table rebuilt
    by hand, or by a migration's copy on SQLite, loses them)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        query = sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'prices'"
        )
    elif dialect == "postgresql":
        query = sa.text(
            "SELECT tgname FROM pg_trigger"
            " WHERE tgrelid = to_regclass('prices') AND NOT tgisinternal"
        )
    else:
        query = sa.text(
            "SELECT trigger_name FROM information_schema.triggers"
            " WHERE event_object_schema = DATABASE() AND event_object_table = 'prices'"
        )
    found = {str(name) for name in conn.execute(query).scalars()}
    return set(PRICE_REVISION_TRIGGERS) <= found
