"""Insert-or-update of many rows in one statement per batch, on every engine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

#: Rows per executed batch; bounds memory, and SQLite's parameter limit is per row.
BATCH_ROWS = 10_000


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
