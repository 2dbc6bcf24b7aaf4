"""File to table: the ingest stage against pyarrow's CSV reader plus the raw driver's upsert.

Run ``python -m benchmarks.ingest_rate [--rows 252000] [--tickers 1000]
[--engines sqlite,postgres]``.
One long CSV (ticker, date, open, high, low, close, adj_close, volume) of synthetic
prices; per engine, in the same run and on fresh databases:

* **ours**: ``pipeline.ingest.load.ingest_paths`` of the file (read, validate every
  row, quarantine, manifest, upsert: everything ``pricecast ingest FILE`` does after
  start-up);
* **baseline**: ``pyarrow.csv.read_csv`` of the same file, its columns turned into
  tuples, and the raw driver's upsert into the same ``prices`` table (SQLite:
  ``sqlite3.executemany`` of ``INSERT ... ON CONFLICT``; PostgreSQL: psycopg's binary
  COPY into a temporary table and one ``INSERT ... ON CONFLICT``), validating nothing.

The ratio is baseline seconds over ours: the share of the libraries' raw speed the
stage keeps (issue 14's target: at least 0.5). JSON in
``benchmarks/results/ingest_rate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow.csv as pacsv
import sqlalchemy as sa

from benchmarks.upsert_prices import (
    DEFAULT_POSTGRES,
    SQLITE_CACHE,
    libpq_dsn,
    one_statement_upsert,
    scratch_postgres,
    synthetic_frame,
)
from pipeline import columns as c
from pipeline.db.migrate import open_database
from pipeline.db.schema import prices
from pipeline.ingest.load import ingest_paths

DEFAULT_JSON = Path(__file__).parent / "results" / "ingest_rate.json"
FILE_COLUMNS = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]


def write_file(frame: pd.DataFrame, path: Path) -> None:
    """The frame as a long CSV, prices with six decimals as quote files have them."""
    out = frame.rename(columns={c.TRADE_DATE: "date"})[FILE_COLUMNS]
    out.to_csv(path, index=False, float_format="%.6f", date_format="%Y-%m-%d")


def baseline_tuples(path: Path) -> list[tuple]:
    """pyarrow's read of the file, as the tuples a driver takes (source: the file name)."""
    table = pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={"date": "string"})
    )
    columns = [table.column(name).to_pylist() for name in FILE_COLUMNS]
    return [(*row, path.name) for row in zip(*columns, strict=True)]


def ours(url: str, path: Path) -> tuple[float, int]:
    engine = open_database(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        report = ingest_paths(conn, [path])
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, report.summary().rows_loaded


def sqlite_baseline(folder: Path, path: Path) -> float:
    database = folder / "baseline.db"
    ddl = sa.create_engine(f"sqlite:///{database}")
    prices.to_metadata(sa.MetaData()).create(ddl)
    ddl.dispose()
    names = ", ".join(c.PRICE_COLUMNS)
    updates = ", ".join(f"{name} = excluded.{name}" for name in c.PRICE_COLUMNS[2:])
    statement = (
        f"INSERT INTO prices ({names}) VALUES ({', '.join('?' for _ in c.PRICE_COLUMNS)}) "
        f"ON CONFLICT (ticker, trade_date) DO UPDATE SET {updates}"
    )
    raw = sqlite3.connect(database)
    raw.execute(SQLITE_CACHE)
    started = time.perf_counter()
    raw.executemany(statement, baseline_tuples(path))
    raw.commit()
    seconds = time.perf_counter() - started
    raw.close()
    return seconds


def postgres_baseline(url: str, path: Path) -> float:
    engine = open_database(url)  # the same schema, then an empty prices table
    with engine.begin() as conn:
        conn.execute(prices.delete())
    engine.dispose()
    with psycopg.connect(libpq_dsn(url)) as conn:
        started = time.perf_counter()
        tuples = baseline_tuples(path)
        rows = [(row[0], pd.Timestamp(row[1]).date(), *row[2:]) for row in tuples]
        one_statement_upsert(conn, rows)
        conn.commit()
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=252_000)
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("PRICECAST_TEST_POSTGRES_URL"))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="pricecast-ingest-") as name:
        folder = Path(name)
        path = folder / "prices.csv"
        write_file(synthetic_frame(args.rows, args.tickers, seed=7), path)
        size = path.stat().st_size
        for engine in args.engines.split(","):
            if engine == "sqlite":
                seconds, loaded = ours(f"sqlite:///{folder / 'ours.db'}", path)
                base = sqlite_baseline(folder, path)
            else:
                with scratch_postgres(args.postgres or DEFAULT_POSTGRES) as url:
                    seconds, loaded = ours(url, path)
                    base = postgres_baseline(url, path)
            assert loaded == args.rows, (loaded, args.rows)
            results.append(
                {
                    "engine": engine,
                    "rows": args.rows,
                    "file_mb": size / 1e6,
                    "ours_seconds": seconds,
                    "baseline_seconds": base,
                    "ours_rows_per_second": args.rows / seconds,
                    "ratio": base / seconds,
                }
            )
    print(f"{'engine':<9} {'rows':>8} {'ours s':>8} {'baseline s':>11} {'ratio':>6}")
    for row in results:
        print(
            f"{row['engine']:<9} {row['rows']:>8} {row['ours_seconds']:>8.2f} "
            f"{row['baseline_seconds']:>11.2f} {row['ratio']:>6.2f}"
        )
    print("ratio = baseline / ours; issue 14's target: at least 0.5")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "load_average": os.getloadavg(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
