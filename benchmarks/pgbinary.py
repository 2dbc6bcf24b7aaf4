"""Why ``pipeline/db/bulk/pgbinary.py`` is written by hand: it against psycopg's own way.

Run ``python -m benchmarks.pgbinary [--rows N] [--repeat N] [--json PATH]``. On
the rows of ``benchmarks/upsert_prices.py`` (same generator, same seed):

- COPY into an ``UNLOGGED`` table without index (so that the client's part
  shows): ``CopyEncoder``'s payload, against psycopg's ``Copy.write_row`` of
  tuples built from the same NumPy columns; then checks both stored the same
  rows.
- Reading a million-value ``int8[]`` and ``float8[]``: ``array_send`` decoded by
  ``read_array``, against psycopg's binary array loader then ``np.array``.

Each figure is the median of ``--repeat`` runs: wall-clock and this process's
CPU (``time.process_time``), the client's share.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg

from benchmarks.upsert_prices import (
    DEFAULT_POSTGRES,
    libpq_dsn,
    scratch_postgres,
    synthetic_frame,
)
from pipeline import columns as c
from pipeline.db.bulk.pgbinary import CopyEncoder, read_array
from pipeline.db.bulk.rows import DATE, FLOAT, STRING, Rows, prepare_rows
from pipeline.db.schema import prices

DEFAULT_JSON = Path(__file__).parent / "results" / "pgbinary.json"
PG_TYPES = {STRING: "text", DATE: "date", FLOAT: "float8"}


def clock(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds of ``action``."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def python_tuples(rows: Rows) -> list[tuple]:
    """The rows as the tuples ``write_row`` takes: ``None`` for NULL, ``date`` for dates."""
    columns = []
    for column in rows.columns:
        if column.kind == STRING:
            values = np.array([*column.labels, None], dtype=object)[column.values].tolist()
        elif column.kind == DATE:
            values = column.values.astype("datetime64[D]").tolist()
        else:
            boxed = column.values.astype(object)
            boxed[np.isnan(column.values)] = None
            values = boxed.tolist()
        columns.append(values)
    return list(zip(*columns, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pgbinary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to copy (1000000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (3)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PRICECAST_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="server to create the scratch database on",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"({DEFAULT_JSON})")
    args = parser.parse_args(argv)

    frame = synthetic_frame(args.rows, 400, 42)
    rows = prepare_rows(prices, frame, list(c.PRICE_COLUMNS))
    encoder = CopyEncoder(rows)
    names = [column.name for column in rows.columns]
    figures: dict[str, tuple[float, float]] = {}
    with scratch_postgres(args.postgres_url) as url, psycopg.connect(libpq_dsn(url)) as conn:
        definitions = ", ".join(f"{column.name} {PG_TYPES[column.kind]}" for column in rows.columns)
        for table in ("ours", "library"):
            conn.execute(f"CREATE UNLOGGED TABLE {table} ({definitions})")
        conn.commit()

        def copy_ours() -> None:
            conn.execute("TRUNCATE ours")
            statement = f"COPY ours ({', '.join(encoder.names)}) FROM STDIN (FORMAT BINARY)"
            with conn.cursor() as cursor, cursor.copy(statement) as copy:
                for data in encoder.payload(slice(0, rows.count)):
                    copy.write(data)
            conn.commit()

        def copy_library() -> None:
            conn.execute("TRUNCATE library")
            statement = f"COPY library ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
            with conn.cursor() as cursor, cursor.copy(statement) as copy:
                copy.set_types([PG_TYPES[column.kind] for column in rows.columns])
                for row in python_tuples(rows):
                    copy.write_row(row)
            conn.commit()

        figures["COPY: CopyEncoder payload"] = clock(copy_ours, args.repeat)
        figures["COPY: tuples + psycopg write_row"] = clock(copy_library, args.repeat)
        figures["  of which building the tuples"] = clock(lambda: python_tuples(rows), args.repeat)
        differing = conn.execute(
            "SELECT count(*) FROM ((TABLE ours EXCEPT ALL TABLE library) "
            "UNION ALL (TABLE library EXCEPT ALL TABLE ours)) AS d"
        ).fetchone()[0]
        assert differing == 0, f"{differing} rows differ between the two COPYs"

        series = f"generate_series(1, {args.rows}) AS x"
        for sql_type, kind in (("int8", ">i8"), ("float8", ">f8")):

            def ours(sql_type: str = sql_type, kind: str = kind) -> np.ndarray:
                query = f"SELECT array_send(array_agg(x::{sql_type})) FROM {series}"
                with conn.cursor(binary=True) as cursor:
                    return read_array(cursor.execute(query).fetchone()[0], kind)

            def library(sql_type: str = sql_type, kind: str = kind) -> np.ndarray:
                query = f"SELECT array_agg(x::{sql_type}) FROM {series}"
                with conn.cursor(binary=True) as cursor:
                    return np.array(cursor.execute(query).fetchone()[0], dtype=kind)

            assert np.array_equal(ours(), library())
            figures[f"{sql_type}[]: array_send + read_array"] = clock(ours, args.repeat)
            figures[f"{sql_type}[]: psycopg array loader + np.array"] = clock(library, args.repeat)

    width = max(len(name) for name in figures)
    print(f"{'measurement':<{width}} | wall s | client CPU s")
    print(f"{'-' * width}-+--------+-------------")
    for name, (wall, cpu) in figures.items():
        print(f"{name:<{width}} | {wall:6.2f} | {cpu:12.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "pgbinary",
        "rows": rows.count,
        "repeat": args.repeat,
        "statistic": "median",
        "figures": {name: {"wall": wall, "cpu": cpu} for name, (wall, cpu) in figures.items()},
        "load_average": os.getloadavg(),
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
