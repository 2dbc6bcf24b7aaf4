"""``bulk_upsert`` on MySQL and MariaDB: ``executemany`` of ``INSERT ... ON DUPLICATE KEY UPDATE``.

Each updated column is assigned ``IF(rule, VALUES(col), col)``; MySQL applies
the assignments left to right, so the columns the rule reads are assigned
last (see ``_mysql_statement``). The driver's ``executemany`` sends a batch as
multi-row ``INSERT`` statements of up to about 1 MB (PyMySQL's
``max_stmt_length``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.bulk.rows import Rows, row_tuples
from pipeline.db.bulk.sql import ReplaceRule, TableSql, sqlalchemy_errors


def _mysql_statement(sql: TableSql, rows: Rows, replace_if: ReplaceRule | None) -> str:
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


def bulk_mysql(
    conn: Connection,
    table: sa.Table,
    rows: Rows,
    replace_if: ReplaceRule | None,
    batch_rows: int,
) -> None:
    statement = _mysql_statement(TableSql(conn, table), rows, replace_if)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with sqlalchemy_errors(conn, statement):
            for start in range(0, rows.count, batch_rows):
                cursor.executemany(statement, list(row_tuples(rows, start, start + batch_rows)))
    finally:
        cursor.close()
