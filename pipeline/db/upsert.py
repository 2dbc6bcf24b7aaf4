"""Insert-or-update of many rows, on every engine.

Two entry points:

- ``upsert_rows``: rows given as dictionaries, through SQLAlchemy Core; for the
  small tables (a few rows per run).
- ``bulk_upsert``: a data frame of any size, through each driver's fastest
  path, for ``prices``:

  - SQLite: one precompiled ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``
    run by the driver's ``executemany`` over plain tuples built from NumPy
    arrays, with a larger page cache for the duration of the call.
  - PostgreSQL, per batch: when no stored row lies within the batch's key
    range (a first load, new dates, new tickers), one binary COPY straight
    into the table. Otherwise the stored rows in the batch's key ranges are
    read back as binary arrays and compared with the batch in NumPy: new rows
    are copied straight into the table, rows that differ go through a
    temporary staging table and one ``INSERT ... ON CONFLICT DO UPDATE ...
    WHERE`` (which checks the replace rule and the difference again as it
    writes), identical rows are not touched (no dead tuples, no row locks).
    The COPY data is built with NumPy in PostgreSQL's binary format. A COPY
    straight into the table runs under a savepoint: when a concurrent writer
    stored one of its keys meanwhile, its rows are merged instead.
  - MySQL/MariaDB: the driver's ``executemany`` of
    ``INSERT ... ON DUPLICATE KEY UPDATE col = IF(rule, VALUES(col), col)``.

Everything runs on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

logger = logging.getLogger(__name__)

#: Rows per executed batch of ``upsert_rows``.
BATCH_ROWS = 10_000

#: Rows per batch of ``bulk_upsert``: per ``executemany`` on SQLite and
#: MySQL, per round through the staging table on PostgreSQL. Bounds memory.
BULK_BATCH_ROWS = {"sqlite": 100_000, "postgresql": 1_000_000, "mysql": 10_000}

#: Rows encoded at once for PostgreSQL's COPY (about 100 bytes each).
_COPY_CHUNK_ROWS = 100_000

#: SQLite page cache while ``bulk_upsert`` runs, in KiB (SQLite's default is 2 MiB).
_SQLITE_CACHE_KIB = 128 * 1024


def _batches(rows: Sequence[Mapping[str, Any]], size: int) -> Iterable[Sequence[Mapping[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def upsert_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Insert ``rows`` into ``table``; rows whose primary key exists replace its other columns.

    Args:
        conn: an open connection; the caller owns the transaction.
        table: the target table; its primary key is the conflict key.
        rows: dictionaries with every column to write.
        batch_rows: rows sent per statement.

    Returns:
        The number of rows written.
    """
    if not rows:
        return 0
    key = [column.name for column in table.primary_key.columns]
    updated = [name for name in rows[0] if name not in key]
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite if dialect == "sqlite" else postgresql).insert(table)
        if updated:
            statement = insert.on_conflict_do_update(
                index_elements=key, set_={name: insert.excluded[name] for name in updated}
            )
        else:
            statement = insert.on_conflict_do_nothing(index_elements=key)
    elif dialect in ("mysql", "mariadb"):
        insert = mysql.insert(table)
        names = updated or key[:1]
        statement = insert.on_duplicate_key_update({name: insert.inserted[name] for name in names})
    else:  # pragma: no cover - engines outside the supported list
        raise NotImplementedError(f"upsert is not implemented for {dialect}")
    for batch in _batches(rows, batch_rows):
        conn.execute(statement, list(batch))
    return len(rows)


# --------------------------------------------------------------------------- bulk_upsert


class ReplaceRule(Protocol):
    """Builds the SQL condition under which an incoming row may replace a stored one.

    Called with ``new(column)`` and ``old(column)``, which return the SQL
    expressions of a column of the incoming and of the stored row, and the
    dialect name (``sqlite``, ``postgresql``, ``mysql`` or ``mariadb``).
    On MySQL/MariaDB the condition may read at most one updated column of
    the stored row (see ``_mysql_statement``).
    """

    def __call__(self, new: Callable[[str], str], old: Callable[[str], str], dialect: str) -> str:
        """The condition, as SQL text."""
        ...


_STRING, _DATE, _FLOAT = "string", "date", "float"
_UNIX_DAYS_AT_PG_EPOCH = 10_957  # 2000-01-01, PostgreSQL's day zero, in days since 1970-01-01


@dataclass
class _Column:
    """One column of the rows to write, as a NumPy array.

    ``values`` holds int64 codes into ``labels`` (-1 for NULL) for strings,
    int64 days since 1970-01-01 for dates, and float64 (NaN for NULL) for floats.
    """

    name: str
    kind: str
    values: np.ndarray
    labels: list[str] = field(default_factory=list)


@dataclass
class _Rows:
    """The rows to write: de-duplicated, sorted by key, column by column."""

    columns: list[_Column]
    key: list[str]
    count: int

    def by_name(self, name: str) -> _Column:
        return next(column for column in self.columns if column.name == name)


def _column_kind(table: sa.Table, column: sa.Column) -> str:
    kind = column.type
    if isinstance(kind, sa.Date) and not isinstance(kind, sa.DateTime):
        return _DATE
    if isinstance(kind, sa.Float):
        return _FLOAT
    if isinstance(kind, sa.String):
        return _STRING
    raise TypeError(
        f"bulk_upsert handles string, date and float columns; "
        f"{table.name}.{column.name} is {kind!r}, use upsert_rows"
    )


def _extract(table: sa.Table, column: sa.Column, series: pd.Series) -> _Column:
    kind = _column_kind(table, column)
    if kind == _STRING:
        codes, uniques = pd.factorize(series, sort=True)
        return _Column(column.name, kind, codes.astype(np.int64), [str(u) for u in uniques])
    if kind == _FLOAT:
        try:
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {column.name} must hold numbers: {exc}") from exc
        return _Column(column.name, kind, values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        days = series.to_numpy().astype("datetime64[D]")
    else:  # datetime.date objects, or text: convert each distinct value once
        codes, uniques = pd.factorize(series)
        known = pd.to_datetime(pd.Index(uniques)).to_numpy().astype("datetime64[D]")
        days = np.append(known, np.datetime64("NaT"))[codes]
    if np.isnat(days).any():
        raise ValueError(f"column {column.name} has missing dates")
    return _Column(column.name, kind, days.astype(np.int64))


def _packed_key(keys: list[np.ndarray]) -> np.ndarray | None:
    """The key columns (codes and day numbers) packed into one int64, order kept.

    The last column varies fastest, by one per unit. ``None`` when the values
    span too much for an int64.
    """
    combined = np.zeros(len(keys[0]), dtype=np.int64)
    if not len(combined):
        return combined
    scale = 1
    for values in reversed(keys):  # the first key column is the most significant
        low = int(values.min())
        span = int(values.max()) - low + 1
        if scale * span >= 2**62:
            return None
        combined += (values - low) * scale
        scale *= span
    return combined


def _key_order(keys: list[np.ndarray]) -> np.ndarray | None:
    """Positions that sort the rows by key, keeping the last row of each key.

    Returns ``None`` when the rows are already sorted with unique keys.
    """
    count = len(keys[0])
    combined = _packed_key(keys)
    if combined is not None:
        if np.all(combined[1:] > combined[:-1]):
            return None
        order = np.argsort(combined, kind="stable")
        ordered = combined[order]
        last = np.ones(count, dtype=bool)
        last[:-1] = ordered[1:] != ordered[:-1]
        return order[last]
    # Too many distinct keys for one int64: sort on the columns, position breaking ties.
    order = np.lexsort([np.arange(count), *reversed(keys)])
    differs = np.zeros(count - 1, dtype=bool)
    for values in keys:
        ordered = values[order]
        differs |= ordered[1:] != ordered[:-1]
    return order[np.append(differs, True)]


def _prepare(table: sa.Table, frame: pd.DataFrame, names: Sequence[str]) -> _Rows:
    key = [column.name for column in table.primary_key.columns]
    missing = [name for name in key if name not in names]
    if missing:
        raise ValueError(f"rows for {table.name} lack key column(s) {', '.join(missing)}")
    columns = [_extract(table, table.c[name], frame[name]) for name in names]
    rows = _Rows(columns, key, len(frame))
    for name in key:
        column = rows.by_name(name)
        if column.kind == _STRING and (column.values < 0).any():
            raise ValueError(f"key column {name} has missing values")
    order = _key_order([rows.by_name(name).values for name in key])
    if order is not None:
        for column in columns:
            column.values = column.values[order]
        rows.count = len(order)
    return rows


def _python_values(column: _Column, start: int, stop: int, dates_as_text: bool) -> list[Any]:
    """The values of a slice as Python objects.

    NULL becomes ``None``; dates become ``YYYY-MM-DD`` text, or ``datetime.date``.
    """
    values = column.values[start:stop]
    if column.kind == _FLOAT:
        missing = np.isnan(values)
        if not missing.any():
            return values.tolist()
        boxed = values.astype(object)
        boxed[missing] = None
        return boxed.tolist()
    if column.kind == _STRING:
        labels = np.array([*column.labels, None], dtype=object)
        return labels[values].tolist()  # code -1 picks the trailing None
    distinct, positions = np.unique(values, return_inverse=True)
    days = distinct.astype("datetime64[D]")
    if dates_as_text:
        labels = np.array(np.datetime_as_string(days, unit="D"), dtype=object)
    else:
        labels = np.array(days.tolist(), dtype=object)
    return labels[positions].tolist()


def _tuples(rows: _Rows, start: int, stop: int, *, dates_as_text: bool = True) -> Iterator[tuple]:
    """Rows ``start:stop`` as tuples of Python values, in column order."""
    values = [_python_values(column, start, stop, dates_as_text) for column in rows.columns]
    return zip(*values, strict=True)


@contextlib.contextmanager
def _sqlalchemy_errors(conn: Connection, statement: str) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy's, as ``Connection.execute`` would."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, dbapi_error, dialect=conn.dialect
        ) from exc


@dataclass
class _Sql:
    """Quoted names and the dialect's NULL-safe comparison."""

    conn: Connection
    table: sa.Table

    def __post_init__(self) -> None:
        self.dialect = self.conn.dialect.name
        self.quote = self.conn.dialect.identifier_preparer.quote
        self.target = self.quote(self.table.name)
        self.full_target = self.conn.dialect.identifier_preparer.format_table(self.table)

    def names(self, names: Iterable[str], prefix: str = "") -> str:
        return ", ".join(prefix + self.quote(name) for name in names)

    def differs(self, left: str, right: str) -> str:
        if self.dialect == "sqlite":
            return f"{left} IS NOT {right}"
        if self.dialect == "postgresql":
            return f"{left} IS DISTINCT FROM {right}"
        return f"NOT ({left} <=> {right})"

    def update_condition(
        self, updated: Sequence[str], new: str, old: str, replace_if: ReplaceRule | None
    ) -> str:
        """``(some column differs) AND rule`` between rows aliased ``new`` and ``old``.

        The cheap comparison comes first: for unchanged rows, the usual case of a
        reload, the rule is never evaluated.
        """
        quote = self.quote
        changed = " OR ".join(
            self.differs(f"{new}.{quote(name)}", f"{old}.{quote(name)}") for name in updated
        )
        if replace_if is None:
            return f"({changed})"
        rule = replace_if(
            lambda name: f"{new}.{quote(name)}", lambda name: f"{old}.{quote(name)}", self.dialect
        )
        return f"({changed}) AND ({rule})"


def bulk_upsert(
    conn: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    replace_if: ReplaceRule | None = None,
    batch_rows: int | None = None,
) -> int:
    """Insert the rows of ``frame`` into ``table``, updating the stored rows they replace.

    Rows sharing a primary key within ``frame``: the last one wins. A stored
    row with the same key is updated when ``replace_if`` allows it (always
    when ``None``) and some written column differs (NULL-safe); an identical
    row is left untouched, so loading the same rows twice writes nothing.

    Args:
        conn: an open connection; the caller owns the transaction.
        table: the target; its primary key is the conflict key. String, date
            and float columns only.
        frame: the rows. Dates may be ``datetime64`` or ``datetime.date``;
            NaN and None are written as NULL.
        columns: the columns to write (default: the table's columns present
            in ``frame``); the key columns are required.
        replace_if: the condition under which an incoming row may replace a
            stored one (see ``ReplaceRule``).
        batch_rows: rows per batch (default ``BULK_BATCH_ROWS`` of the engine).

    Returns:
        The number of rows submitted after removing duplicate keys, whether or
        not they changed anything.

    Raises:
        ValueError: a key column is missing or has missing values, or a value
            does not fit its column's kind.
        sqlalchemy.exc.DBAPIError: the database refused the rows.
    """
    if frame.empty:
        return 0
    names = (
        list(columns)
        if columns is not None
        else [column.name for column in table.columns if column.name in frame.columns]
    )
    started = time.perf_counter()
    rows = _prepare(table, frame, names)
    if not conn.in_transaction():
        # The rows go through the driver's connection, which SQLAlchemy does not
        # see: begin as ``conn.execute`` would, so that the caller's
        # ``conn.commit()`` commits them (and closing without it rolls them back).
        conn.begin()
    dialect = conn.dialect.name
    if dialect == "sqlite":
        _bulk_sqlite(conn, table, rows, replace_if, batch_rows or BULK_BATCH_ROWS["sqlite"])
    elif dialect == "postgresql":
        _bulk_postgresql(conn, table, rows, replace_if, batch_rows or BULK_BATCH_ROWS["postgresql"])
    elif dialect in ("mysql", "mariadb"):
        _bulk_mysql(conn, table, rows, replace_if, batch_rows or BULK_BATCH_ROWS["mysql"])
    else:  # pragma: no cover - engines outside the supported list
        raise NotImplementedError(f"bulk upsert is not implemented for {dialect}")
    logger.debug(
        "upserted %d rows into %s in %.2f s", rows.count, table.name, time.perf_counter() - started
    )
    return rows.count


# --------------------------------------------------------------------------- SQLite


def _sqlite_statement(sql: _Sql, rows: _Rows, replace_if: ReplaceRule | None) -> str:
    names = [column.name for column in rows.columns]
    updated = [name for name in names if name not in rows.key]
    insert = (
        f"INSERT INTO {sql.full_target} ({sql.names(names)}) "
        f"VALUES ({', '.join('?' for _ in names)}) ON CONFLICT ({sql.names(rows.key)}) "
    )
    if not updated:
        return insert + "DO NOTHING"
    assignments = ", ".join(f"{sql.quote(n)} = excluded.{sql.quote(n)}" for n in updated)
    condition = sql.update_condition(updated, "excluded", sql.target, replace_if)
    return insert + f"DO UPDATE SET {assignments} WHERE {condition}"


def _bulk_sqlite(
    conn: Connection,
    table: sa.Table,
    rows: _Rows,
    replace_if: ReplaceRule | None,
    batch_rows: int,
) -> None:
    statement = _sqlite_statement(_Sql(conn, table), rows, replace_if)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        (cache,) = cursor.execute("PRAGMA cache_size").fetchone()
        (page_size,) = cursor.execute("PRAGMA page_size").fetchone()
        cache_kib = -cache if cache < 0 else cache * page_size // 1024
        # A larger page cache than SQLite's default 2 MiB only costs the pages it
        # holds. It mattered with the former index on trade_date (inserts all over
        # it thrashed a small cache); with the primary key alone it makes no
        # measurable difference on the benchmark, and is kept for other orders.
        grow = rows.count > 10_000 and cache_kib < _SQLITE_CACHE_KIB
        if grow:
            cursor.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
        try:
            with _sqlalchemy_errors(conn, statement):
                for start in range(0, rows.count, batch_rows):
                    cursor.executemany(statement, _tuples(rows, start, start + batch_rows))
        finally:
            if grow:
                cursor.execute(f"PRAGMA cache_size = {int(cache)}")
    finally:
        cursor.close()


# --------------------------------------------------------------------------- MySQL, MariaDB


def _mysql_statement(sql: _Sql, rows: _Rows, replace_if: ReplaceRule | None) -> str:
    names = [column.name for column in rows.columns]
    updated = [name for name in names if name not in rows.key]
    insert = (
        f"INSERT INTO {sql.full_target} ({sql.names(names)}) "
        f"VALUES ({', '.join('%s' for _ in names)}) ON DUPLICATE KEY UPDATE "
    )
    if not updated:
        key = sql.quote(rows.key[0])
        return insert + f"{key} = {key}"
    if replace_if is None:  # MySQL itself leaves a row whose values do not change untouched
        return insert + ", ".join(f"{sql.quote(n)} = VALUES({sql.quote(n)})" for n in updated)
    # MySQL applies the assignments left to right, each seeing the ones before.
    # The rule must see the stored row: the columns it reads are assigned last.
    read: list[str] = []

    def old(name: str) -> str:
        read.append(name)
        return f"{sql.target}.{sql.quote(name)}"

    rule = replace_if(lambda name: f"VALUES({sql.quote(name)})", old, sql.dialect)
    read_updated = sorted(set(read) & set(updated))
    if len(read_updated) > 1:
        raise NotImplementedError(
            f"on {sql.dialect}, a replace rule may read one updated column, not {read_updated}"
        )
    ordered = [n for n in updated if n not in read_updated] + read_updated
    return insert + ", ".join(
        f"{sql.quote(n)} = IF({rule}, VALUES({sql.quote(n)}), {sql.quote(n)})" for n in ordered
    )


def _bulk_mysql(
    conn: Connection,
    table: sa.Table,
    rows: _Rows,
    replace_if: ReplaceRule | None,
    batch_rows: int,
) -> None:
    statement = _mysql_statement(_Sql(conn, table), rows, replace_if)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with _sqlalchemy_errors(conn, statement):
            for start in range(0, rows.count, batch_rows):
                cursor.executemany(statement, list(_tuples(rows, start, start + batch_rows)))
    finally:
        cursor.close()


# --------------------------------------------------------------------------- PostgreSQL

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_SAVEPOINT = "pricecast_bulk_upsert"
#: ``work_mem`` of the join between a large staged batch and the stored rows, when
#: the server's is smaller: a hash table of a million rows takes about 110 MB.
_PG_MERGE_WORK_MEM_KIB = 128 * 1024
#: Staged rows from which the join gets that ``work_mem``.
_PG_MERGE_BIG = 50_000
#: A batch's rows sharing every key column but the date are read back as one
#: range of dates unless more than this many days apart (a weekend, a holiday).
_GAP_DAYS = 7
#: Rows of a batch whose stored rows are read back per statement, about; bounds
#: the arrays the server builds for one answer.
_READ_ROWS = 100_000
#: Contiguous runs of same-shaped rows in a COPY chunk above which the rows are
#: sent shape by shape instead of in key order (see ``_CopyEncoder``).
_COPY_MAX_RUNS_SHARE = 64


class _CopyEncoder:
    """Rows as PostgreSQL binary COPY data, built with NumPy, NULL written as NULL.

    The columns go dates and floats first, then text (``names``). A row's record
    has a fixed layout once its NULLs and the length of its text are known, so
    the rows sharing both (usually all of them, or a few large groups) become
    one NumPy structured array. The records keep the rows' order (the key's,
    which keeps the primary key's inserts local), unless the shapes alternate
    too often, when they are sent shape by shape.
    """

    def __init__(self, rows: _Rows) -> None:
        self.rows = rows
        self.fixed = [column for column in rows.columns if column.kind != _STRING]
        self.strings = [column for column in rows.columns if column.kind == _STRING]
        if len(self.fixed) > 62:
            raise TypeError("bulk_upsert writes at most 62 date and float columns to PostgreSQL")
        self.names = [column.name for column in self.fixed + self.strings]
        # Each text value as a COPY field (length, then UTF-8); the last one is NULL,
        # so that the code -1 picks it.
        self.fields = [
            [
                *(struct.pack("!i", len(data)) + data for data in map(str.encode, column.labels)),
                struct.pack("!i", -1),
            ]
            for column in self.strings
        ]

    def payload(self, positions: np.ndarray | slice) -> Iterator[Any]:
        """The whole COPY data of the rows at ``positions`` (an array or a slice)."""
        if isinstance(positions, slice):
            positions = np.arange(positions.start, positions.stop)
        yield _COPY_HEADER
        for start in range(0, len(positions), _COPY_CHUNK_ROWS):
            chunk = positions[start : start + _COPY_CHUNK_ROWS]
            if len(chunk) and chunk[-1] - chunk[0] == len(chunk) - 1:  # contiguous: no gather
                chunk = slice(int(chunk[0]), int(chunk[-1]) + 1)
            yield from self._encode(chunk)
        yield _COPY_TRAILER

    def _encode(self, selection: np.ndarray | slice) -> list[Any]:
        fixed = [column.values[selection] for column in self.fixed]
        count = len((fixed or [self.strings[0].values[selection]])[0])
        nulls = np.zeros(count, dtype=np.int64)
        for bit, (column, values) in enumerate(zip(self.fixed, fixed, strict=True)):
            if column.kind == _FLOAT:
                nulls |= np.isnan(values).astype(np.int64) << bit
        texts, which = self._texts(selection, count)
        widths = np.array([len(text) for text in texts], dtype=np.int64)[which]
        null_code, null_kinds = pd.factorize(nulls)
        width_code, width_kinds = pd.factorize(widths)
        if len(null_kinds) == 1 and len(width_kinds) == 1:
            records = self._records(int(null_kinds[0]), int(width_kinds[0]), fixed, texts, which)
            return [records.view(np.uint8).data]
        shape = null_code * len(width_kinds) + width_code
        blocks, rank = [], np.empty(count, dtype=np.int64)
        for code in range(len(null_kinds) * len(width_kinds)):
            members = np.flatnonzero(shape == code)
            if not len(members):
                blocks.append(None)
                continue
            rank[members] = np.arange(len(members))
            blocks.append(
                self._records(
                    int(null_kinds[code // len(width_kinds)]),
                    int(width_kinds[code % len(width_kinds)]),
                    [values[members] for values in fixed],
                    texts,
                    which[members],
                )
            )
        starts = np.flatnonzero(np.diff(shape)) + 1
        if len(starts) + 1 > max(16, count // _COPY_MAX_RUNS_SHARE):
            return [block.view(np.uint8).data for block in blocks if block is not None]
        starts = np.concatenate([[0], starts])
        stops = np.append(starts[1:], count)
        return [
            b"".join(
                blocks[code][first : first + stop - start].view(np.uint8).data
                for code, first, start, stop in zip(
                    shape[starts].tolist(),
                    rank[starts].tolist(),
                    starts.tolist(),
                    stops.tolist(),
                    strict=True,
                )
            )
        ]

    def _records(
        self,
        nulls: int,
        width: int,
        fixed: list[np.ndarray],
        texts: list[bytes],
        which: np.ndarray,
    ) -> np.ndarray:
        """Records sharing one layout: the columns that are NULL, the width of the text."""
        layout: list[tuple[str, str]] = [("count", ">i2")]
        for index, column in enumerate(self.fixed):
            layout.append((f"size{index}", ">i4"))
            if not nulls >> index & 1:
                layout.append((f"value{index}", ">i4" if column.kind == _DATE else ">f8"))
        if self.strings:
            layout.append(("text", f"S{width}"))
        records = np.empty(len(which), dtype=layout)
        records["count"] = len(self.names)
        for index, (column, values) in enumerate(zip(self.fixed, fixed, strict=True)):
            if nulls >> index & 1:
                records[f"size{index}"] = -1
            elif column.kind == _DATE:
                records[f"size{index}"] = 4
                records[f"value{index}"] = values - _UNIX_DAYS_AT_PG_EPOCH
            else:
                records[f"size{index}"] = 8
                records[f"value{index}"] = values
        if self.strings:
            records["text"] = np.array(texts, dtype=f"S{width}")[which]
        return records

    def _texts(self, selection: np.ndarray | slice, count: int) -> tuple[list[bytes], np.ndarray]:
        """The text fields of each distinct combination of text values, and each row's."""
        if not self.strings:
            return [b""], np.zeros(count, dtype=np.int64)
        codes = [column.values[selection] + 1 for column in self.strings]  # 0 is NULL
        sizes = [len(column.labels) + 1 for column in self.strings]
        if int(np.prod(sizes, dtype=object)) < 2**62:
            combined = np.zeros(count, dtype=np.int64)
            for values, size in zip(codes, sizes, strict=True):
                combined = combined * size + values
            which, distinct = pd.factorize(combined)
            combos = []
            for value in distinct.tolist():
                parts = []
                for size in reversed(sizes):
                    value, code = divmod(value, size)
                    parts.append(code)
                combos.append(parts[::-1])
        else:  # pragma: no cover - more distinct text combinations than an int64 holds
            distinct, which = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
            combos = distinct.tolist()
        texts = [
            b"".join(fields[code - 1] for fields, code in zip(self.fields, combo, strict=True))
            for combo in combos
        ]
        return texts, np.asarray(which).reshape(-1)


class _PgStatements:
    """The statements of a ``bulk_upsert`` on PostgreSQL and the batch facts they take."""

    def __init__(self, sql: _Sql, rows: _Rows, replace_if: ReplaceRule | None) -> None:
        self.sql, self.rows = sql, rows
        self.encoder = _CopyEncoder(rows)
        quote = sql.quote
        names = [column.name for column in rows.columns]
        columns = sql.names(self.encoder.names)
        updated = [name for name in names if name not in rows.key]
        self.copy_into_table = f"COPY {sql.full_target} ({columns}) FROM STDIN (FORMAT BINARY)"
        self.staging = quote(f"pricecast_stage_{sql.table.name}")
        types = {name: sql.table.c[name].type.compile(dialect=sql.conn.dialect) for name in names}
        definitions = ", ".join(f"{quote(name)} {types[name]}" for name in self.encoder.names)
        self.create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.staging} ({definitions}) ON COMMIT DROP"
        )
        self.copy_into_staging = f"COPY {self.staging} ({columns}) FROM STDIN (FORMAT BINARY)"
        # The staged rows that are new, or differ and may replace the stored row, go
        # through INSERT ... ON CONFLICT, which checks again at the moment of writing
        # (a concurrent writer may have stored or changed the row since).
        joined = " AND ".join(f"t.{quote(name)} = s.{quote(name)}" for name in rows.key)
        keep = f"t.{quote(rows.key[0])} IS NULL"
        conflict = f"ON CONFLICT ({sql.names(rows.key)}) DO NOTHING"
        if updated:
            keep += f" OR ({sql.update_condition(updated, 's', 't', replace_if)})"
            assignments = ", ".join(f"{quote(name)} = excluded.{quote(name)}" for name in updated)
            condition = sql.update_condition(updated, "excluded", sql.target, replace_if)
            conflict = (
                f"ON CONFLICT ({sql.names(rows.key)}) DO UPDATE SET {assignments} WHERE {condition}"
            )
        self.merge = (
            f"INSERT INTO {sql.full_target} ({columns}) "
            f"SELECT {sql.names(self.encoder.names, 's.')} FROM {self.staging} AS s "
            f"LEFT JOIN {sql.full_target} AS t ON {joined} WHERE {keep} {conflict}"
        )
        self.box = (
            f"SELECT 1 FROM {sql.full_target} WHERE "
            + " AND ".join(f"{quote(name)} BETWEEN %s AND %s" for name in rows.key)
            + " LIMIT 1"
        )
        self.read = self._read_statement()

    def _read_statement(self) -> str | None:
        """The statement reading back the stored rows in a batch's key ranges, as arrays.

        A range is a run of the batch's rows (sorted by key) that share every key
        column but the last, a date, and every text column, with no gap of more
        than ``_GAP_DAYS`` days. One statement takes many ranges, as arrays
        (``unnest``), and answers with one row of binary arrays (``array_send``),
        which NumPy reads at once: each stored row's packed key (the range's key
        plus the days since its first date, equal to ``_packed_key`` of the batch's
        row with that key), a bit mask (bit ``i``: value ``i`` is NULL, or an
        infinite date; the bits after: a text column differs from the range's)
        and the other date and float columns (0 for NULL).

        ``None`` when the key does not end with a date, a key column is a float,
        or there are more than 31 other columns: such batches are merged through
        the staging table.
        """
        sql, rows, quote = self.sql, self.rows, self.sql.quote
        *equal, last = [rows.by_name(name) for name in rows.key]
        others = [column for column in rows.columns if column.name not in rows.key]
        if last.kind != _DATE or any(column.kind == _FLOAT for column in equal):
            return None
        if len(others) > 31 or _packed_key([column.values for column in equal + [last]]) is None:
            return None
        self.equal, self.last = equal, last
        self.values = [column for column in others if column.kind != _STRING]
        self.texts = [column for column in others if column.kind == _STRING]
        array_type = {_STRING: "text[]", _DATE: "date[]"}
        unnest = [f"%s::{array_type[column.kind]}" for column in equal]
        unnest += ["%s::date[]", "%s::date[]", "%s::int8[]"]
        unnest += ["%s::text[]" for _ in self.texts]
        aliases = [f"e{index}" for index in range(len(equal))] + ["lo", "hi", "base"]
        aliases += [f"x{index}" for index in range(len(self.texts))]
        on = [f"p.{quote(column.name)} = k.e{index}" for index, column in enumerate(equal)]
        on.append(f"p.{quote(last.name)} BETWEEN k.lo AND k.hi")
        # A date that is NULL or infinite (which has no day number) counts as NULL: it
        # differs from every date of the batch, and the merge decides.
        flags = [
            f"(NOT coalesce(isfinite(p.{quote(column.name)}), false))::int"
            if column.kind == _DATE
            else f"(p.{quote(column.name)} IS NULL)::int"
            for column in self.values
        ]
        flags += [
            f"(p.{quote(column.name)} IS DISTINCT FROM k.x{index})::int"
            for index, column in enumerate(self.texts)
        ]
        mask = " + ".join(f"{flag} * {1 << bit}" for bit, flag in enumerate(flags)) or "0"
        arrays = [f"k.base + (p.{quote(last.name)} - k.lo)", mask]
        arrays += [
            f"CASE WHEN isfinite(p.{quote(column.name)}) "
            f"THEN p.{quote(column.name)} - DATE '1970-01-01' ELSE 0 END"
            if column.kind == _DATE
            else f"coalesce(p.{quote(column.name)}, 0)"
            for column in self.values
        ]
        # The bounds of the first key column let the planner scan only that part of
        # the primary key even before the table has statistics.
        first = quote(rows.key[0])
        return (
            "SELECT "
            + ", ".join(f"array_send(array_agg({expression}))" for expression in arrays)
            + f" FROM unnest({', '.join(unnest)}) AS k({', '.join(aliases)})"
            + f" JOIN {sql.full_target} AS p ON {' AND '.join(on)}"
            + f" WHERE p.{first} BETWEEN %s AND %s"
        )

    def box_bounds(self, start: int, stop: int) -> list[Any]:
        """The smallest and largest value of each key column in a batch."""
        bounds: list[Any] = []
        for name in self.rows.key:
            column = self.rows.by_name(name)
            values = column.values[start:stop]
            low, high = int(values.min()), int(values.max())
            if column.kind == _STRING:
                bounds += [column.labels[low], column.labels[high]]
            elif column.kind == _DATE:
                bounds += [np.datetime64(low, "D").item(), np.datetime64(high, "D").item()]
            else:
                bounds += [float(values.min()), float(values.max())]
        return bounds

    def ranges(self, start: int, stop: int) -> Iterator[list[list[Any]]]:
        """The parameters of ``read`` for the batch ``start:stop``, statement by statement."""
        keys = _packed_key([column.values[start:stop] for column in self.equal + [self.last]])
        assert keys is not None  # checked by _read_statement
        days = self.last.values[start:stop]
        breaks = np.diff(days) > _GAP_DAYS
        for column in self.equal + self.texts:
            values = column.values[start:stop]
            breaks |= values[1:] != values[:-1]
        firsts = np.flatnonzero(np.concatenate([[True], breaks]))
        lasts = np.append(firsts[1:], stop - start) - 1
        # Cut the ranges into statements of about _READ_ROWS rows of the batch.
        cuts = np.searchsorted(firsts, np.arange(_READ_ROWS, stop - start, _READ_ROWS))
        for group in np.split(np.arange(len(firsts)), np.unique(cuts)):
            if not len(group):
                continue
            first, final = firsts[group], lasts[group]
            params = [
                _python_list(column, column.values[start:stop][first]) for column in self.equal
            ]
            params += [_python_list(self.last, days[first]), _python_list(self.last, days[final])]
            params.append(keys[first].tolist())
            params += [
                _python_list(column, column.values[start:stop][first]) for column in self.texts
            ]
            leading = self.rows.by_name(self.rows.key[0])
            bounds = leading.values[start:stop][[first[0], final[-1]]]
            yield [*params, *_python_list(leading, bounds)]

    def classify(
        self, start: int, stop: int, answers: list[tuple]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the batch's new rows and of its rows that differ from the stored one.

        ``answers`` are the rows ``read`` returned. A stored row between the
        batch's dates that the batch does not hold is ignored.
        """
        keys = _packed_key([column.values[start:stop] for column in self.equal + [self.last]])
        assert keys is not None
        count = stop - start
        found, same = np.zeros(count, dtype=bool), np.zeros(count, dtype=bool)
        for answer in answers:
            if answer[0] is None:  # no stored row in these ranges
                continue
            stored, mask = _pg_array(answer[0], ">i8"), _pg_array(answer[1], ">i4")
            at = np.minimum(np.searchsorted(keys, stored), count - 1)
            held = keys[at] == stored
            at, mask = at[held], mask[held]
            equal = (mask >> len(self.values)) == 0  # the text columns
            for bit, (column, data) in enumerate(zip(self.values, answer[2:], strict=True)):
                theirs = _pg_array(data, ">f8" if column.kind == _FLOAT else ">i4")[held]
                ours = column.values[start:stop][at]
                stored_null = (mask >> bit & 1).astype(bool)
                if column.kind == _FLOAT:  # NaN stands for NULL in ours
                    ours_null = np.isnan(ours)
                    equal &= np.where(ours_null, stored_null, ~stored_null & (ours == theirs))
                else:  # dates are never NULL in ours
                    equal &= ~stored_null & (ours == theirs)
            found[at] = True
            same[at[equal]] = True
        return np.flatnonzero(~found) + start, np.flatnonzero(found & ~same) + start


def _python_list(column: _Column, values: np.ndarray) -> list[Any]:
    """Codes or day numbers as the Python values psycopg sends (``None`` for NULL)."""
    if column.kind == _STRING:
        return np.array([*column.labels, None], dtype=object)[values].tolist()
    if column.kind == _DATE:
        return values.astype("datetime64[D]").tolist()
    return values.tolist()


def _pg_array(data: bytes, kind: str) -> np.ndarray:
    """A one-dimensional array without NULLs, from PostgreSQL's binary format (``array_send``)."""
    dimensions, _, _ = struct.unpack_from("!iiI", data)
    if dimensions == 0:
        return np.zeros(0, dtype=kind)
    (count,) = struct.unpack_from("!i", data, 12)
    items = np.frombuffer(data, dtype=[("size", ">i4"), ("value", kind)], count=count, offset=20)
    if dimensions != 1 or (items["size"] != np.dtype(kind).itemsize).any():
        raise RuntimeError("unexpected array from PostgreSQL")  # pragma: no cover
    return items["value"]


def _bulk_postgresql(
    conn: Connection,
    table: sa.Table,
    rows: _Rows,
    replace_if: ReplaceRule | None,
    batch_rows: int,
) -> None:
    """Per batch: COPY when no stored row can clash; else compare, then write what differs.

    - No stored row within the batch's key range (a first load, a new day, new
      tickers): one binary COPY straight into the table.
    - Otherwise the stored rows in the batch's key ranges are read back (one
      statement per ``_READ_ROWS`` rows, as binary arrays) and compared with
      the batch in NumPy. Identical rows are left alone; new rows are copied
      straight into the table; rows that differ are copied into a staging table
      and merged by one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``, which
      checks the replace rule and the difference again as it writes.
    - A COPY straight into the table runs under a savepoint: if a concurrent
      writer stored one of its keys meanwhile, it is rolled back and those rows
      are merged instead.
    """
    statements = _PgStatements(_Sql(conn, table), rows, replace_if)
    driver = conn.connection.driver_connection
    # Under AUTOCOMMIT the staging table would vanish after each statement.
    own = driver.transaction() if driver.autocommit else contextlib.nullcontext()
    with own, driver.cursor() as cursor:
        writer = _PostgresWriter(conn, cursor, statements)
        for start in range(0, rows.count, batch_rows):
            stop = min(start + batch_rows, rows.count)
            if not writer.may_hold_keys(start, stop):
                if not writer.copy_into_table(slice(start, stop)):
                    writer.merge(slice(start, stop))
                continue
            if statements.read is None:
                writer.merge(slice(start, stop))
                continue
            new, changed = statements.classify(start, stop, writer.read_stored(start, stop))
            if len(new) and not writer.copy_into_table(new):
                changed = np.union1d(new, changed)
            if len(changed):
                writer.merge(changed)
        writer.finish()


class _PostgresWriter:
    """The statements of one ``bulk_upsert`` on PostgreSQL, on the driver's cursor."""

    def __init__(self, conn: Connection, cursor: Any, statements: _PgStatements) -> None:
        self.conn = conn
        self.cursor = cursor
        self.statements = statements
        self.staging_created = False

    def execute(self, statement: str, params: Sequence[Any] | None = None, **options: Any) -> Any:
        with _sqlalchemy_errors(self.conn, statement):
            return self.cursor.execute(statement, params, **options)

    def may_hold_keys(self, start: int, stop: int) -> bool:
        """Whether a stored row lies within the key range of a batch."""
        bounds = self.statements.box_bounds(start, stop)
        return self.execute(self.statements.box, bounds).fetchone() is not None

    def read_stored(self, start: int, stop: int) -> list[tuple]:
        """The stored rows in the batch's key ranges, as ``_PgStatements.read`` answers."""
        statement = self.statements.read
        assert statement is not None
        return [
            self.execute(statement, params, binary=True).fetchone()
            for params in self.statements.ranges(start, stop)
        ]

    def copy(self, statement: str, positions: np.ndarray | slice) -> None:
        with _sqlalchemy_errors(self.conn, statement), self.cursor.copy(statement) as copy:
            for data in self.statements.encoder.payload(positions):
                copy.write(data)

    def copy_into_table(self, positions: np.ndarray | slice) -> bool:
        """COPY rows straight into the table, when none of their keys is stored.

        COPY writes many rows per heap page and WAL record: the fastest way in.
        Returns ``False``, having written nothing, when a key turned out to be
        stored (a concurrent writer); the caller then merges the rows.
        """
        from psycopg import errors as pg_errors

        self.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            self.copy(self.statements.copy_into_table, positions)
        except sa.exc.IntegrityError as exc:
            if not isinstance(exc.orig, pg_errors.UniqueViolation):
                raise
            self.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            self.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            return False
        self.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return True

    def merge(self, positions: np.ndarray | slice) -> None:
        """Copy rows into the staging table, then insert or update those that differ."""
        statements = self.statements
        if not self.staging_created:
            self.execute(statements.create)
            self.staging_created = True
        self.execute(f"TRUNCATE {statements.staging}")
        self.copy(statements.copy_into_staging, positions)
        count = positions.stop - positions.start if isinstance(positions, slice) else len(positions)
        if count < _PG_MERGE_BIG:
            self.execute(statements.merge)
            return
        # The join hashes the batch or the stored rows: let it do so in memory, for
        # this statement only (the setting is local to the transaction anyway).
        work_mem, kib = self.execute(
            "SELECT current_setting('work_mem'), setting::bigint FROM pg_settings "
            "WHERE name = 'work_mem'"
        ).fetchone()
        if kib < _PG_MERGE_WORK_MEM_KIB:
            self.execute("SELECT set_config('work_mem', %s, true)", [f"{_PG_MERGE_WORK_MEM_KIB}kB"])
        self.execute(statements.merge)
        if kib < _PG_MERGE_WORK_MEM_KIB:
            self.execute("SELECT set_config('work_mem', %s, true)", [work_mem])

    def finish(self) -> None:
        """Empty the staging table: its space is not kept until the transaction ends."""
        if self.staging_created:
            self.execute(f"TRUNCATE {self.statements.staging}")
