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
    into the table. Otherwise the rows, encoded with NumPy in PostgreSQL's
    binary COPY format, are copied into a temporary staging table, and one
    statement joins them to the stored rows, inserts the new ones and
    updates, with ``ON CONFLICT DO UPDATE``, only those that differ and that
    the replace rule allows; unchanged rows are not touched (no dead tuples,
    no row locks). Both run under a savepoint: when a concurrent writer
    stores one of the new keys meanwhile, the batch is redone the slower way
    that always works, a single ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``
    from the staging table.
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


def _key_order(keys: list[np.ndarray]) -> np.ndarray | None:
    """Positions that sort the rows by key, keeping the last row of each key.

    Returns ``None`` when the rows are already sorted with unique keys.
    """
    count = len(keys[0])
    combined = np.zeros(count, dtype=np.int64)
    scale = 1
    for values in reversed(keys):  # the first key column is the most significant
        low = int(values.min())
        span = int(values.max()) - low + 1
        if scale * span >= 2**62:
            break
        combined += (values - low) * scale
        scale *= span
    else:
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
        # Inserts into the secondary index land all over it and thrash SQLite's
        # default 2 MiB page cache; a larger one only costs the pages it holds.
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
_PAD = "pricecast_pad"
_IS_NEW = "pricecast_is_new"
_SAVEPOINT = "pricecast_bulk_upsert"
#: ``work_mem`` of the join between a batch and the stored rows, when the server's
#: is smaller: a hash table of a million rows takes about 110 MB.
_PG_MERGE_WORK_MEM_KIB = 128 * 1024
_COPY_TYPES = {_STRING: "text", _DATE: "date", _FLOAT: "float8"}


@dataclass
class _Staging:
    """The temporary table a batch is copied into, and the statements that read it.

    Its rows are fixed-width so that NumPy can encode them: dates and floats
    first (NaN standing for NULL, turned back into NULL when read), then the
    text columns, then a ``bytea`` padding column that brings every row to
    the same length.
    """

    sql: _Sql
    rows: _Rows
    replace_if: ReplaceRule | None

    def __post_init__(self) -> None:
        sql, rows = self.sql, self.rows
        self.fixed = [column for column in rows.columns if column.kind != _STRING]
        self.strings = [column for column in rows.columns if column.kind == _STRING]
        self.encoded = [[label.encode() for label in column.labels] for column in self.strings]
        self.name = sql.quote(f"pricecast_stage_{sql.table.name}")
        self.copy_names = [column.name for column in self.fixed + self.strings] + [_PAD]
        names = [column.name for column in rows.columns]
        self.updated = [name for name in names if name not in rows.key]
        columns = sql.names(names)
        types = {name: sql.table.c[name].type.compile(dialect=sql.conn.dialect) for name in names}
        definitions = ", ".join(f"{sql.quote(name)} {types[name]}" for name in self.copy_names[:-1])
        self.create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.name} "
            f"({definitions}, {_PAD} bytea) ON COMMIT DROP"
        )
        self.copy = f"COPY {self.name} ({sql.names(self.copy_names)}) FROM STDIN (FORMAT BINARY)"
        self.copy_into_table = (
            f"COPY {sql.full_target} ({sql.names(names)}) FROM STDIN (FORMAT BINARY)"
        )
        self.copy_types = [_COPY_TYPES[column.kind] for column in rows.columns]
        selected = ", ".join(
            f"NULLIF({sql.quote(name)}, 'NaN'::double precision) AS {sql.quote(name)}"
            if rows.by_name(name).kind == _FLOAT
            else sql.quote(name)
            for name in names
        )
        staged = f"(SELECT {selected} FROM {self.name}) AS s"
        insert = f"INSERT INTO {sql.full_target} ({columns}) SELECT {columns} FROM {staged}"
        conflict = f"ON CONFLICT ({sql.names(rows.key)}) DO NOTHING"
        if self.updated:
            assignments = ", ".join(
                f"{sql.quote(name)} = excluded.{sql.quote(name)}" for name in self.updated
            )
            condition = sql.update_condition(self.updated, "excluded", sql.target, self.replace_if)
            conflict = (
                f"ON CONFLICT ({sql.names(rows.key)}) DO UPDATE SET {assignments} WHERE {condition}"
            )
        self.upsert = f"{insert} {conflict}"
        joined = " AND ".join(f"t.{sql.quote(n)} = s.{sql.quote(n)}" for n in rows.key)
        absent = f"t.{sql.quote(rows.key[0])} IS NULL"
        keep = absent
        if self.updated:
            keep += f" OR ({sql.update_condition(self.updated, 's', 't', self.replace_if)})"
        self.merge = (
            f"WITH incoming AS (SELECT s.*, {absent} AS {_IS_NEW} FROM {staged} "
            f"LEFT JOIN {sql.full_target} AS t ON {joined} WHERE {keep}), "
            f"changed AS (INSERT INTO {sql.full_target} ({columns}) "
            f"SELECT {columns} FROM incoming WHERE NOT {_IS_NEW} {conflict}) "
            f"INSERT INTO {sql.full_target} ({columns}) "
            f"SELECT {columns} FROM incoming WHERE {_IS_NEW}"
        )
        self.box = (
            f"SELECT 1 FROM {sql.full_target} WHERE "
            + " AND ".join(f"{sql.quote(name)} BETWEEN %s AND %s" for name in rows.key)
            + " LIMIT 1"
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

    def records(self, start: int, stop: int) -> np.ndarray:
        """Binary COPY rows of a slice, as one structured array."""
        count = min(stop, self.rows.count) - start
        tails, width, which = self._tails(start, start + count)
        fields: list[tuple[str, str]] = [("count", ">i2")]
        for index, column in enumerate(self.fixed):
            kind = ">i4" if column.kind == _DATE else ">f8"
            fields += [(f"size{index}", ">i4"), (f"value{index}", kind)]
        fields.append(("tail", f"S{width}"))
        records = np.empty(count, dtype=fields)
        records["count"] = len(self.copy_names)
        for index, column in enumerate(self.fixed):
            values = column.values[start : start + count]
            if column.kind == _DATE:
                records[f"size{index}"] = 4
                records[f"value{index}"] = values - _UNIX_DAYS_AT_PG_EPOCH
            else:
                records[f"size{index}"] = 8
                records[f"value{index}"] = values
        records["tail"] = tails[which]
        return records

    def _tails(self, start: int, stop: int) -> tuple[np.ndarray, int, np.ndarray]:
        """The text columns and the padding of each row, as fixed-width byte strings.

        Returns the distinct tails, their width, and the tail of each row.
        """
        codes = [column.values[start:stop] + 1 for column in self.strings]  # 0 is NULL
        sizes = [len(column.labels) + 1 for column in self.strings]
        if int(np.prod(sizes, dtype=object)) < 2**62:
            combined = np.zeros(stop - start, dtype=np.int64)
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
        heads = []
        for combo in combos:
            head = b""
            for encoded, code in zip(self.encoded, combo, strict=True):
                value = encoded[code - 1] if code else None
                if value is None:
                    head += struct.pack("!i", -1)
                else:
                    head += struct.pack("!i", len(value)) + value
            heads.append(head)
        width = max(len(head) for head in heads) + 4
        padded = [
            head + struct.pack("!i", width - len(head) - 4).ljust(width - len(head), b"\0")
            for head in heads
        ]
        return np.array(padded, dtype=f"S{width}"), width, np.asarray(which)


def _bulk_postgresql(
    conn: Connection,
    table: sa.Table,
    rows: _Rows,
    replace_if: ReplaceRule | None,
    batch_rows: int,
) -> None:
    staging = _Staging(_Sql(conn, table), rows, replace_if)
    driver = conn.connection.driver_connection
    # Under AUTOCOMMIT the staging table would vanish after each statement.
    own = driver.transaction() if driver.autocommit else contextlib.nullcontext()
    with own, driver.cursor() as cursor:
        writer = _PostgresWriter(conn, cursor, staging)
        for start in range(0, rows.count, batch_rows):
            stop = min(start + batch_rows, rows.count)
            if writer.may_hold_keys(start, stop) or not writer.copy_into_table(start, stop):
                writer.merge_through_staging(start, stop)
        writer.finish()


class _PostgresWriter:
    """The statements of one ``bulk_upsert`` on PostgreSQL, on the driver's cursor."""

    def __init__(self, conn: Connection, cursor: Any, staging: _Staging) -> None:
        self.conn = conn
        self.cursor = cursor
        self.staging = staging
        self.staging_created = False

    def execute(self, statement: str, params: Sequence[Any] | None = None) -> Any:
        with _sqlalchemy_errors(self.conn, statement):
            return self.cursor.execute(statement, params)

    def may_hold_keys(self, start: int, stop: int) -> bool:
        """Whether a stored row lies within the key range of a batch."""
        bounds = self.staging.box_bounds(start, stop)
        return self.execute(self.staging.box, bounds).fetchone() is not None

    def copy_into_table(self, start: int, stop: int) -> bool:
        """COPY a batch straight into the table, when none of its keys is stored.

        COPY writes many rows per heap page and WAL record: the fastest way in.
        Returns ``False``, having written nothing, when a key turned out to be
        stored (a concurrent writer); the caller then merges the batch.
        """
        from psycopg import errors as pg_errors

        staging = self.staging
        self.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            with (
                _sqlalchemy_errors(self.conn, staging.copy_into_table),
                self.cursor.copy(staging.copy_into_table) as copy,
            ):
                copy.set_types(staging.copy_types)
                for chunk in range(start, stop, _COPY_CHUNK_ROWS):
                    end = min(chunk + _COPY_CHUNK_ROWS, stop)
                    for row in _tuples(staging.rows, chunk, end, dates_as_text=False):
                        copy.write_row(row)
        except sa.exc.IntegrityError as exc:
            if not isinstance(exc.orig, pg_errors.UniqueViolation):
                raise
            self.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            self.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            return False
        self.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return True

    def merge_through_staging(self, start: int, stop: int) -> None:
        """Copy a batch into the staging table, then insert or update what differs."""
        from psycopg import errors as pg_errors

        staging = self.staging
        if not self.staging_created:
            self.execute(staging.create)
            self.staging_created = True
        self.execute(f"TRUNCATE {staging.name}")
        with _sqlalchemy_errors(self.conn, staging.copy), self.cursor.copy(staging.copy) as copy:
            copy.write(_COPY_HEADER)
            for chunk in range(start, stop, _COPY_CHUNK_ROWS):
                records = staging.records(chunk, min(chunk + _COPY_CHUNK_ROWS, stop))
                copy.write(records.view(np.uint8).data)
            copy.write(_COPY_TRAILER)
        self.execute(f"SAVEPOINT {_SAVEPOINT}")
        # The join hashes the batch or the stored rows: let it do so in memory.
        # Only for this statement; a rollback to the savepoint undoes it too.
        work_mem, kib = self.execute(
            "SELECT current_setting('work_mem'), setting::bigint FROM pg_settings "
            "WHERE name = 'work_mem'"
        ).fetchone()
        if kib < _PG_MERGE_WORK_MEM_KIB:
            self.execute("SELECT set_config('work_mem', %s, true)", [f"{_PG_MERGE_WORK_MEM_KIB}kB"])
        try:
            self.execute(staging.merge)
        except sa.exc.IntegrityError as exc:
            if not isinstance(exc.orig, pg_errors.UniqueViolation):
                raise
            # A concurrent transaction inserted one of the new keys after the join read.
            self.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            self.execute(staging.upsert)
        else:
            if kib < _PG_MERGE_WORK_MEM_KIB:
                self.execute("SELECT set_config('work_mem', %s, true)", [work_mem])
        self.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")

    def finish(self) -> None:
        """Empty the staging table: its space is not kept until the transaction ends."""
        if self.staging_created:
            self.execute(f"TRUNCATE {self.staging.name}")
