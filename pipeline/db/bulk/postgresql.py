"""``bulk_upsert`` on PostgreSQL: COPY what is new, compare what is stored, merge what differs.

``bulk_postgresql`` says how, batch by batch. Identical rows are not written
at all (no new row version, no dead tuple, no row lock), new ones go by COPY
straight into the table, and only the rows that differ pay for a staging table
and an ``INSERT ... ON CONFLICT``. The COPY data and the arrays read back are
PostgreSQL's binary format, built and read by ``pgbinary``. Against the plain
way (COPY into a staging table, then one ``INSERT ... ON CONFLICT`` of every
row), ``benchmarks/upsert_prices.py`` measures this at 2.3 to 3.3 times the
speed on a first and on a second load of a million rows (``benchmarks/README.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.bulk.pgbinary import CopyEncoder, read_array
from pipeline.db.bulk.rows import DATE, FLOAT, STRING, Column, Rows, packed_key
from pipeline.db.bulk.sql import ReplaceRule, TableSql, sqlalchemy_errors

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


class _PgStatements:
    """The statements of a ``bulk_upsert`` on PostgreSQL and the batch facts they take."""

    def __init__(self, sql: TableSql, rows: Rows, replace_if: ReplaceRule | None) -> None:
        self.sql, self.rows = sql, rows
        self.encoder = CopyEncoder(rows)
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
        plus the days since its first date, equal to ``packed_key`` of the batch's
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
        if last.kind != DATE or any(column.kind == FLOAT for column in equal):
            return None
        if len(others) > 31 or packed_key([column.values for column in equal + [last]]) is None:
            return None
        self.equal, self.last = equal, last
        self.values = [column for column in others if column.kind != STRING]
        self.texts = [column for column in others if column.kind == STRING]
        array_type = {STRING: "text[]", DATE: "date[]"}
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
            if column.kind == DATE
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
            if column.kind == DATE
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
            if column.kind == STRING:
                bounds += [column.labels[low], column.labels[high]]
            elif column.kind == DATE:
                bounds += [np.datetime64(low, "D").item(), np.datetime64(high, "D").item()]
            else:
                bounds += [float(values.min()), float(values.max())]
        return bounds

    def ranges(self, start: int, stop: int) -> Iterator[list[list[Any]]]:
        """The parameters of ``read`` for the batch ``start:stop``, statement by statement."""
        keys = packed_key([column.values[start:stop] for column in self.equal + [self.last]])
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
        keys = packed_key([column.values[start:stop] for column in self.equal + [self.last]])
        assert keys is not None
        count = stop - start
        found, same = np.zeros(count, dtype=bool), np.zeros(count, dtype=bool)
        for answer in answers:
            if answer[0] is None:  # no stored row in these ranges
                continue
            stored, mask = read_array(answer[0], ">i8"), read_array(answer[1], ">i4")
            at = np.minimum(np.searchsorted(keys, stored), count - 1)
            held = keys[at] == stored
            at, mask = at[held], mask[held]
            equal = (mask >> len(self.values)) == 0  # the text columns
            for bit, (column, data) in enumerate(zip(self.values, answer[2:], strict=True)):
                theirs = read_array(data, ">f8" if column.kind == FLOAT else ">i4")[held]
                ours = column.values[start:stop][at]
                stored_null = (mask >> bit & 1).astype(bool)
                if column.kind == FLOAT:  # NaN stands for NULL in ours
                    ours_null = np.isnan(ours)
                    equal &= np.where(ours_null, stored_null, ~stored_null & (ours == theirs))
                else:  # dates are never NULL in ours
                    equal &= ~stored_null & (ours == theirs)
            found[at] = True
            same[at[equal]] = True
        return np.flatnonzero(~found) + start, np.flatnonzero(found & ~same) + start


def _python_list(column: Column, values: np.ndarray) -> list[Any]:
    """Codes or day numbers as the Python values psycopg sends (``None`` for NULL)."""
    if column.kind == STRING:
        return np.array([*column.labels, None], dtype=object)[values].tolist()
    if column.kind == DATE:
        return values.astype("datetime64[D]").tolist()
    return values.tolist()


def bulk_postgresql(
    conn: Connection,
    table: sa.Table,
    rows: Rows,
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
    statements = _PgStatements(TableSql(conn, table), rows, replace_if)
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
        with sqlalchemy_errors(self.conn, statement):
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
        with sqlalchemy_errors(self.conn, statement), self.cursor.copy(statement) as copy:
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
