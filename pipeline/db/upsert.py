"""Insert-or-update of many rows, on every engine.

Two entry points:

- ``upsert_rows``: rows given as dictionaries, through SQLAlchemy Core; for the
  small tables (a few rows per run).
- ``bulk_upsert``: a data frame of any size, through each driver's fastest
  path, for ``prices``. The frame becomes key-sorted NumPy columns once
  (``pipeline.db.bulk.rows``), then each engine's module writes them:

  - SQLite (``pipeline.db.bulk.sqlite``): one precompiled ``INSERT ... ON
    CONFLICT DO UPDATE ... WHERE`` run by the driver's ``executemany``.
  - PostgreSQL (``pipeline.db.bulk.postgresql``): binary COPY of the new rows,
    the stored ones read back and compared in NumPy, a staging table and one
    ``INSERT ... ON CONFLICT`` for those that differ.
  - MySQL/MariaDB (``pipeline.db.bulk.mysql``): the driver's ``executemany`` of
    ``INSERT ... ON DUPLICATE KEY UPDATE col = IF(rule, VALUES(col), col)``.

Everything runs on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from pipeline.db.bulk.mysql import bulk_mysql
from pipeline.db.bulk.postgresql import bulk_postgresql
from pipeline.db.bulk.rows import Rows, prepare_rows
from pipeline.db.bulk.sql import ReplaceRule
from pipeline.db.bulk.sqlite import bulk_sqlite

__all__ = [
    "BATCH_ROWS",
    "BULK_BATCH_ROWS",
    "ReplaceRule",
    "Rows",
    "WriteContext",
    "bulk_upsert",
    "upsert_rows",
]

logger = logging.getLogger(__name__)

#: Rows per executed batch of ``upsert_rows``.
BATCH_ROWS = 10_000

#: Rows per batch of ``bulk_upsert``: per ``executemany`` on SQLite and
#: MySQL, per round through the staging table on PostgreSQL. Bounds memory.
BULK_BATCH_ROWS = {"sqlite": 100_000, "postgresql": 1_000_000, "mysql": 10_000}


#: What ``bulk_upsert`` runs its write in, given the rows it is about to write (already
#: de-duplicated and key-sorted) on the caller's connection, inside its transaction.
WriteContext = Callable[[Connection, Rows], AbstractContextManager[object]]


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


def bulk_upsert(
    conn: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    replace_if: ReplaceRule | None = None,
    batch_rows: int | None = None,
    around_write: WriteContext | None = None,
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
        around_write: a context the write runs in, given the prepared rows, once the
            transaction has begun (``upsert_prices`` sets aside idle triggers with it).

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
    rows = prepare_rows(table, frame, names)
    if not conn.in_transaction():
        # The rows go through the driver's connection, which SQLAlchemy does not
        # see: begin as ``conn.execute`` would, so that the caller's
        # ``conn.commit()`` commits them (and closing without it rolls them back).
        conn.begin()
    with around_write(conn, rows) if around_write else contextlib.nullcontext():
        _write(conn, table, rows, replace_if, batch_rows)
    logger.debug(
        "upserted %d rows into %s in %.2f s", rows.count, table.name, time.perf_counter() - started
    )
    return rows.count


def _write(
    conn: Connection,
    table: sa.Table,
    rows: Rows,
    replace_if: ReplaceRule | None,
    batch_rows: int | None,
) -> None:
    """The rows, through the engine's own module."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        bulk_sqlite(conn, table, rows, replace_if, batch_rows or BULK_BATCH_ROWS["sqlite"])
    elif dialect == "postgresql":
        bulk_postgresql(conn, table, rows, replace_if, batch_rows or BULK_BATCH_ROWS["postgresql"])
    elif dialect in ("mysql", "mariadb"):
        bulk_mysql(conn, table, rows, replace_if, batch_rows or BULK_BATCH_ROWS["mysql"])
    else:  # pragma: no cover - engines outside the supported list
        raise NotImplementedError(f"bulk upsert is not implemented for {dialect}")
