"""Contested rows: an input's valid rows that meet stored rows of another input.

Which row wins mirrors ``pipeline.db.prices._source_precedence``: a feed row replaces
and is replaced; between files, the later name (byte order) wins. A valid row that
loses is *superseded*, not loaded; one of an earlier input of the same ingest that a
later input replaces moves from that input's loaded rows to its superseded rows, in
its report and its manifest row (``supersede``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.days import as_days
from pipeline.db.manifest import record_input
from pipeline.db.schema import prices
from pipeline.ingest.batch import FEED_MARK


class InputCounts(Protocol):
    """The counts of an input's report that superseding moves."""

    rows_loaded: int
    rows_superseded: int


@dataclass
class LoadedInput:
    """An input this ingest loaded: its report and manifest row, which a later input
    of the same ingest may move rows of from loaded to superseded."""

    source: str
    report: InputCounts
    manifest: dict[str, Any]


def supersede(
    conn: Connection, loaded: Mapping[str, LoadedInput], displaced: Mapping[str, int]
) -> None:
    """Move rows that a later input replaced from their input's loaded to its superseded
    rows, in the report and the manifest."""
    for source, count in displaced.items():
        earlier = loaded.get(source)
        if earlier is None or not count:
            continue
        earlier.report.rows_loaded -= count
        earlier.report.rows_superseded += count
        earlier.manifest["rows_loaded"] = earlier.report.rows_loaded
        earlier.manifest["rows_superseded"] = earlier.report.rows_superseded
        record_input(conn, earlier.manifest)


#: Above this many tickers, the stored rows an input contests are looked up by date
#: range alone (a bound list of thousands of symbols costs more than it filters)...
_TICKER_FILTER_MAX = 500
#: ... unless the input spans at most this many days (and binds at most
#: ``_TICKER_FILTER_LIMIT`` symbols): a daily file of 1,000 tickers against 2.52 million
#: stored rows on SQLite took 0.4 to 0.7 s by date range (the primary key starts with the
#: ticker, so every row is read) and 0.03 s by its tickers.
_SHORT_SPAN_DAYS = 31
_TICKER_FILTER_LIMIT = 10_000


def count_contests(
    conn: Connection, source: str, valid: pd.DataFrame, loaded_before: Mapping[str, LoadedInput]
) -> tuple[int, dict[str, int]]:
    """Which of ``valid`` (rows of ``source`` about to be upserted) meet a stored row of
    another source: how many lose to it (a later file's row stays), and, by source, how
    many rows of earlier inputs of this ingest they replace.

    Mirrors ``pipeline.db.prices._source_precedence``: a feed row replaces and is
    replaced; between files, the later name (byte order) wins.
    """
    if valid.empty:
        return 0, {}
    # Dates as datetime64 (a date object per row cost 0.1 s per 252,000 rows).
    days = pd.to_datetime(valid[c.TRADE_DATE]).to_numpy().astype("datetime64[D]")
    first, last = (pd.Timestamp(day).date() for day in (days.min(), days.max()))
    tickers = sorted(valid[c.TICKER].unique())
    where = [
        prices.c[c.SOURCE] != source,
        prices.c[c.TRADE_DATE].between(first, last),
    ]
    short = (last - first).days <= _SHORT_SPAN_DAYS and len(tickers) <= _TICKER_FILTER_LIMIT
    if len(tickers) <= _TICKER_FILTER_MAX or short:
        where.append(prices.c[c.TICKER].in_(tickers))
    incoming_feed = FEED_MARK in source

    def wins(other: str) -> bool:
        return incoming_feed or FEED_MARK in other or source >= other

    # The sources met first (no rows fetched): most inputs meet none that matter, e.g.
    # a corrected file under a new name meets only earlier files of earlier ingests.
    met = conn.execute(sa.select(prices.c[c.SOURCE]).where(*where).group_by(prices.c[c.SOURCE]))
    relevant = [other for other in met.scalars() if not wins(other) or other in loaded_before]
    if not relevant:
        return 0, {}
    rows = conn.execute(
        sa.select(prices.c[c.TICKER], prices.c[c.TRADE_DATE], prices.c[c.SOURCE]).where(
            *where, prices.c[c.SOURCE].in_(relevant)
        )
    ).all()
    # Column by column: a frame built from Row objects probes each one's attributes
    # (2.7 s for 252,000 rows, against 0.1 s).
    stored_tickers, stored_days, sources = (list(values) for values in zip(*rows, strict=True))
    stored = pd.DataFrame(
        {c.TICKER: stored_tickers, c.TRADE_DATE: as_days(stored_days), c.SOURCE: sources}
    )
    keys = pd.DataFrame({c.TICKER: valid[c.TICKER].to_numpy(), c.TRADE_DATE: days})
    counts = stored.merge(keys, on=[c.TICKER, c.TRADE_DATE])[c.SOURCE].value_counts()
    lost = sum(int(count) for other, count in counts.items() if not wins(other))
    displaced = {
        other: int(count)
        for other, count in counts.items()
        if wins(other) and other in loaded_before
    }
    return lost, displaced
