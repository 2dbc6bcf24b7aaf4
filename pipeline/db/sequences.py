"""Reads and writes of the ``sequence_files`` table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import sequence_files
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
