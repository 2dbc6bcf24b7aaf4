"""Reads and writes of the ``prices`` table."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.days import as_days
from pipeline.db.schema import PRICE_REVISION_TRIGGERS, prices, sequence_files
from pipeline.db.upsert import Rows, bulk_upsert

logger = logging.getLogger(__name__)


#: Marks a feed's source (``https://...``, ``yahoo://AAPL``); any other source is a file name.
_FEED_MARKER = "://"


def _source_precedence(new: Callable[[str], str], old: Callable[[str], str], dialect: str) -> str:
    """SQL: whether an incoming row may replace the stored one, by their sources.

    A feed row always replaces and is always replaced; between two files, the
    later name (plain string order) wins; a stored row without a source is
    replaced. ``new``/``old`` give the SQL of a column of the incoming/stored row.
    """
    incoming, stored = new(c.SOURCE), old(c.SOURCE)
    find = "strpos" if dialect == "postgresql" else "instr"
    if dialect == "postgresql":
        later = f'{incoming} COLLATE "C" >= {stored} COLLATE "C"'
    elif dialect in ("mysql", "mariadb"):
        later = f"CAST({incoming} AS BINARY) >= CAST({stored} AS BINARY)"
    else:  # SQLite compares text byte by byte
        later = f"{incoming} >= {stored}"
    return (
        f"{find}({incoming}, '{_FEED_MARKER}') > 0 OR {stored} IS NULL"
        f" OR {find}({stored}, '{_FEED_MARKER}') > 0 OR {later}"
    )


def upsert_prices(conn: Connection, frame: pd.DataFrame, *, keep_triggers: bool = False) -> int:
    """Insert or replace price rows keyed on ``(ticker, trade_date)``.

    - Rows of ``frame`` sharing a ``(ticker, trade_date)``: the last one wins.
    - A stored row is replaced only as the source precedence allows: a row
      from a feed (its ``source`` contains ``://``) always replaces, and a
      stored row from a feed or without a source is always replaced; between
      two files, the incoming row replaces the stored one when its file name
      is the same or later in plain string order, so files give the same
      table whatever order they are loaded in.
    - A stored row equal to the incoming one in every column is not written,
      so loading the same rows again changes nothing.
    - On SQLite, when no row falls on or before its ticker's ``data_through``
      (a first load, a new day) and there are at least ``SET_ASIDE_MIN_ROWS``
      rows, the ``price_revisions`` triggers, which would record nothing, are
      set aside for the write (``_without_idle_triggers``).

    Args:
        conn: an open connection; the caller owns the transaction.
        frame: a normalised price frame with the columns of ``columns.PRICE_COLUMNS``
            (``trade_date`` as ``datetime64`` or ``datetime.date``; NaN for a missing price).
        keep_triggers: leave the triggers in place even when they would record
            nothing (to measure them, or to compare with them).

    Returns:
        The number of rows submitted after removing duplicates, whether or not
        they changed anything.

    Raises:
        ValueError: a column is missing, or a ticker or date is missing.
        sqlalchemy.exc.IntegrityError: a row the database refuses (e.g. no close).
    """
    missing = [name for name in c.PRICE_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"price rows lack column(s) {', '.join(missing)}")
    bypass = not keep_triggers and conn.dialect.name == "sqlite"
    return bulk_upsert(
        conn,
        prices,
        frame,
        columns=c.PRICE_COLUMNS,
        replace_if=_source_precedence,
        around_write=_without_idle_triggers if bypass else None,
    )


#: Rows a write needs for the triggers to be set aside: the check, the drop and the
#: recreation take 4 to 10 ms, what the triggers cost 1,500 to 4,000 rows (2.6 us of
#: CPU a row); a day of 1,000 tickers took the same time either way, five days of
#: them 63 ms of CPU set aside against 81 ms firing (``benchmarks/README.md``).
SET_ASIDE_MIN_ROWS = 5_000


@contextlib.contextmanager
def _without_idle_triggers(conn: Connection, rows: Rows) -> Iterator[None]:
    """Run the write without the ``price_revisions`` triggers when they would record
    nothing: no row of ``rows`` falls on or before its ticker's ``data_through``.

    SQLite only. Its triggers run a program for every row written (a lookup of the
    ticker's sequence file), which a first load or a new day pays for nothing: the
    5,000-ticker backfill's ingest took 204 s before the triggers and 366 s after.
    Here they are dropped inside the caller's transaction, the rows written, and
    the triggers recreated from their own text in ``sqlite_master``. SQLite's DDL
    is transactional: a rollback brings the triggers back with the rows as they
    were. Its transactions are serializable: the files the check reads and the write
    are one transaction, and the write lock the drop takes keeps every other writer
    out until it ends, so no other write goes unrecorded. A write that fails
    with the transaction still open gets its triggers back at once, so a caller
    that goes on after the error keeps them. Triggers missing to begin with
    (``revision_triggers_present`` false) stay missing: the sequences stage warns
    and reads every close then.

    Not done elsewhere: MariaDB/MySQL commit DDL implicitly (a failure would leave
    the rows half written and the triggers gone), and PostgreSQL's triggers run
    once per statement over its transition tables, a small cost next to the rows.
    The deletes of ``ingest.load._delete_dropped_rows`` keep the triggers: they are
    the rows a changed file no longer holds, few, and usually within a file's span.

    Measured by ``python -m benchmarks.upsert_prices --triggers --rows 2520000
    --tickers 1000`` (``benchmarks/README.md``; 2 cores at load average 4 to 7, medians
    of 3): a first load of 2,515,000 rows took 21.2 s set aside against 31.7 s with the
    triggers firing, 13.9 s of CPU against 20.6 s (the triggers: 2.6 us a row). The
    check itself, against every ``sequence_files`` row in NumPy, takes about 3 ms for
    1,000 files and 10 to 15 ms for a million rows of 5,000 tickers, as one SQL
    statement over ``json_each`` of each ticker's first day does (11 to 15 ms).
    """
    dbapi = conn.connection.dbapi_connection
    # Without an open transaction at the driver (the sqlite3 module's own
    # transaction handling, not ``pipeline.db.engine``'s), a DROP would commit on its own.
    if rows.count < SET_ASIDE_MIN_ROWS or not getattr(dbapi, "in_transaction", False):
        yield
        return
    triggers = _revision_trigger_sql(conn)
    if triggers is None or _rows_within_files(conn, rows):
        yield
        return
    for name in triggers:
        conn.exec_driver_sql(f"DROP TRIGGER {name}")
    try:
        yield
    finally:
        # After an error that ended the transaction, its rollback restored them.
        if dbapi.in_transaction:
            for statement in triggers.values():
                conn.exec_driver_sql(statement)


def _revision_trigger_sql(conn: Connection) -> dict[str, str] | None:
    """The ``CREATE TRIGGER`` text of each ``price_revisions`` trigger on SQLite by
    name, or ``None`` when some are missing."""
    found = dict(
        conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'prices'"
        ).all()
    )
    if not set(PRICE_REVISION_TRIGGERS) <= set(found):
        return None
    return {name: found[name] for name in PRICE_REVISION_TRIGGERS}


def _rows_within_files(conn: Connection, rows: Rows) -> bool:
    """Whether some row falls on or before its ticker's ``sequence_files.data_through``
    (the condition under which the triggers record a row)."""
    result = conn.exec_driver_sql("SELECT ticker, data_through FROM sequence_files")
    try:
        files = result.cursor.fetchall()  # plain tuples, the dates as ISO text
    finally:
        result.close()
    if not files:
        return False
    names, ends = zip(*files, strict=True)
    days = np.array(ends, dtype="datetime64[D]").astype(np.int64).tolist()
    through = dict(zip(names, days, strict=True))
    tickers = rows.by_name(c.TICKER)
    codes = tickers.values
    # The earliest day of each run of one ticker (sorted by key, the rows hold one run each).
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    firsts = np.minimum.reduceat(rows.by_name(c.TRADE_DATE).values, starts)
    spans = np.array(
        [through.get(tickers.labels[code], _NO_FILE) for code in codes[starts].tolist()],
        dtype=np.int64,
    )
    return bool(np.any(firsts <= spans))


#: The span of a ticker without a sequence file: before every day.
_NO_FILE = np.iinfo(np.int64).min


@dataclass(frozen=True)
class CloseArrays:
    """Closes as arrays, ordered by ticker and date: each ticker is one run of rows."""

    tickers: np.ndarray  # object (str)
    dates: np.ndarray  # datetime64[D]
    closes: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.closes)

    def runs(self) -> Iterator[tuple[str, slice]]:
        """Each ticker and the rows that hold its closes."""
        if not len(self):
            return
        starts = np.flatnonzero(np.r_[True, self.tickers[1:] != self.tickers[:-1]])
        ends = np.r_[starts[1:], len(self)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            yield str(self.tickers[start]), slice(start, end)

    def frame(self) -> pd.DataFrame:
        """The frame ``read_closes`` returns (``trade_date`` as ``datetime.date``)."""
        return pd.DataFrame(
            {
                c.TICKER: pd.array(self.tickers.tolist(), dtype="str"),
                c.TRADE_DATE: self.dates.astype(object),
                c.CLOSE: self.closes,
            }
        )


#: Rows ``read_close_arrays`` takes from the cursor at a time.
READ_CHUNK_ROWS = 200_000


def _close_columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[np.ndarray]:
    """The cursor's rows (ticker, date, close, and maybe the adjusted close) as arrays."""
    values = [list(map(itemgetter(index), rows)) for index in range(width)]
    return [
        _shared_strings(np.array(values[0], dtype=object)),
        as_days(values[1]),
        *(np.array(column, dtype=float) for column in values[2:]),
    ]


def _shared_strings(tickers: np.ndarray) -> np.ndarray:
    """``tickers`` (sorted, so each ticker one run) with every row of a run pointing at one
    string: the driver makes a string per row, and 12.6 million of them were 0.7 GB."""
    if not len(tickers):
        return tickers
    starts = np.flatnonzero(np.r_[True, tickers[1:] != tickers[:-1]])
    return np.repeat(tickers[starts], np.diff(np.r_[starts, len(tickers)]))


def read_close_arrays(
    conn: Connection,
    through: dt.date,
    tickers: Sequence[str] | None = None,
    field: str = c.CLOSE,
    since: dt.date | None = None,
) -> CloseArrays:
    """``read_closes`` as arrays: the fast path for whole price histories.

    Rows are taken from the driver's cursor, column by column into NumPy,
    without building a Python object per row: a few hundred thousand closes
    read in a fraction of the time.
    """
    columns = [prices.c[c.TICKER], prices.c[c.TRADE_DATE], prices.c[c.CLOSE]]
    if field == c.ADJ_CLOSE:
        columns.append(prices.c[c.ADJ_CLOSE])
    elif field != c.CLOSE:
        raise ValueError(f"field must be close or adj_close, got {field!r}")
    query = (
        sa.select(*columns)
        .where(prices.c[c.TRADE_DATE] <= through)
        .order_by(prices.c[c.TICKER], prices.c[c.TRADE_DATE])
    )
    if tickers is not None:
        query = query.where(prices.c[c.TICKER].in_(list(tickers)))
    if since is not None:
        if field != c.CLOSE:
            raise ValueError("since applies to close only")
        query = query.where(prices.c[c.TRADE_DATE] >= since)
    joined = _fetch_columns(conn, query, len(columns))
    arrays = CloseArrays(tickers=joined[0], dates=joined[1], closes=joined[2])
    if field == c.ADJ_CLOSE:
        adjusted = joined[3]  # NULL became NaN
        closes = arrays.closes.copy()
        for ticker, rows_of in arrays.runs():
            if np.isnan(adjusted[rows_of]).any():
                logger.warning("%s lacks adjusted closes on some days; its closes are used", ticker)
            else:
                closes[rows_of] = adjusted[rows_of]
        arrays = CloseArrays(arrays.tickers, arrays.dates, closes)
    return arrays


def _fetch_columns(conn: Connection, query: sa.Select, width: int) -> list[np.ndarray]:
    """The rows of ``query`` (ticker, date, close, and maybe the adjusted close) as arrays."""
    result = conn.execute(query)
    parts: list[list[np.ndarray]] = []
    try:
        # The DBAPI cursor's plain tuples (no Row objects, no per-value date parsing), a
        # slice at a time: all of them at once took about 210 bytes a close (a tuple, a
        # ticker string and a date per row), 2.6 GB for 5,000 tickers of ten years.
        while rows := result.cursor.fetchmany(READ_CHUNK_ROWS):
            parts.append(_close_columns(rows, width))
    finally:
        result.close()
    parts = parts or [_close_columns([], width)]
    return [np.concatenate([part[index] for part in parts]) for index in range(width)]


def read_closes_after_files(conn: Connection, through: dt.date) -> CloseArrays:
    """Each ticker's closes after the ``data_through`` of its sequence file (the
    ``sequence_files`` row) and on or before ``through``, as ``read_close_arrays`` gives
    them: one seek of the primary key per file instead of every close."""
    files = sequence_files
    if conn.dialect.name == "sqlite":
        # CROSS JOIN: SQLite takes the files as the outer loop (the planner may not).
        query = sa.text(
            "SELECT p.ticker, p.trade_date, p.close FROM sequence_files AS s CROSS JOIN prices"
            " AS p WHERE p.ticker = s.ticker AND p.trade_date > s.data_through"
            " AND p.trade_date <= :through ORDER BY p.ticker, p.trade_date"
        ).bindparams(sa.bindparam("through", through, sa.Date))
    else:
        query = (
            sa.select(prices.c[c.TICKER], prices.c[c.TRADE_DATE], prices.c[c.CLOSE])
            .select_from(
                files.join(
                    prices,
                    sa.and_(
                        prices.c[c.TICKER] == files.c[c.TICKER],
                        prices.c[c.TRADE_DATE] > files.c.data_through,
                    ),
                )
            )
            .where(prices.c[c.TRADE_DATE] <= through)
            .order_by(prices.c[c.TICKER], prices.c[c.TRADE_DATE])
        )
    joined = _fetch_columns(conn, query, 3)
    return CloseArrays(tickers=joined[0], dates=joined[1], closes=joined[2])


def tickers_with_prices(conn: Connection) -> list[str]:
    """``list_tickers``, by one seek of the primary key per ticker on SQLite and
    PostgreSQL (a loose index scan) instead of reading every row's key."""
    if conn.dialect.name not in ("sqlite", "postgresql"):
        return list_tickers(conn)
    query = sa.text(
        "WITH RECURSIVE found(ticker) AS ("
        " SELECT min(ticker) FROM prices"
        " UNION ALL SELECT (SELECT min(p.ticker) FROM prices AS p WHERE p.ticker > found.ticker)"
        " FROM found WHERE found.ticker IS NOT NULL"
        ") SELECT ticker FROM found WHERE ticker IS NOT NULL"
    )
    return list(conn.execute(query).scalars())


def read_closes(
    conn: Connection,
    through: dt.date,
    tickers: Sequence[str] | None = None,
    field: str = c.CLOSE,
    since: dt.date | None = None,
) -> pd.DataFrame:
    """Closing prices on or before ``through``, ordered by ticker and date.

    Args:
        conn: an open connection.
        through: the last date to read.
        tickers: tickers to read; ``None`` reads all.
        field: ``close``, or ``adj_close`` for adjusted closes. A ticker whose
            adjusted close is missing on any day up to ``through`` keeps its
            closes (mixing the two would break the series), with a warning.
        since: the first date to read (default: from the first price). Only for
            ``close``: which field an ``adj_close`` read takes depends on the whole series.

    Returns:
        A frame with columns ``ticker``, ``trade_date`` (``datetime.date``) and
        ``close`` (holding the chosen field).
    """
    return read_close_arrays(conn, through, tickers, field, since).frame()


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
