"""Writes and reads of the ``forecasts`` table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import forecasts


def replace_forecasts(
    conn: Connection,
    as_of: dt.date,
    model_version: int,
    tickers: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
) -> int:
    """Make ``rows`` the forecasts of ``tickers`` as of ``as_of`` by ``model_version``.

    The earlier rows of that partition are deleted first, in the caller's
    transaction, so a rerun leaves exactly one run's rows (even when the
    horizon changed between runs).
    """
    conn.execute(
        sa.delete(forecasts).where(
            forecasts.c[c.AS_OF_DATE] == as_of,
            forecasts.c[c.MODEL_VERSION] == model_version,
            forecasts.c[c.TICKER].in_(list(tickers)),
        )
    )
    if rows:
        conn.execute(sa.insert(forecasts), [dict(row) for row in rows])
    return len(rows)


def read_forecasts(conn: Connection, as_of: dt.date | None = None) -> pd.DataFrame:
    """Forecast rows, optionally of one as-of date, in key order."""
    query = sa.select(forecasts).order_by(
        forecasts.c[c.TICKER],
        forecasts.c[c.AS_OF_DATE],
        forecasts.c[c.MODEL_VERSION],
        forecasts.c[c.TARGET_DATE],
    )
    if as_of is not None:
        query = query.where(forecasts.c[c.AS_OF_DATE] == as_of)
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=list(forecasts.c.keys()))
