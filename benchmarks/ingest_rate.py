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

``--steps`` then ingests the file once more, into a fresh SQLite database, with
each step of the stage timed (its thread's CPU seconds and wall seconds; reading the
file's bytes and their SHA-256 happen in the source, outside the steps), and builds
the exchange calendar in a new process for its CPU seconds: in the stage it is built
on a background thread (``pipeline.trading_calendar.prepare_calendars``) while the
file is read, once per process, so this second ingest finds it built.
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


#: The steps ``--steps`` times: (module, function, label); each is replaced, for that
#: ingest, by a wrapper that adds up its thread's CPU time and its wall time.
STEPS = [
    ("pipeline.ingest.sources", "parse_file_bytes", "parse (decode, probe, pyarrow, columns)"),
    ("pipeline.ingest.load", "validate_batch", "validate"),
    ("pipeline.ingest.validate", "_latest_sessions", "  of which latest sessions (the calendar)"),
    ("pipeline.ingest.validate", "_flags", "  of which flags (jumps, closed days)"),
    ("pipeline.ingest.load", "previous_closes", "  of which previous closes (1 query)"),
    ("pipeline.ingest.load", "add_tickers", "universe"),
    ("pipeline.ingest.load", "count_contests", "contested rows"),
    ("pipeline.ingest.load", "upsert_prices", "upsert prices"),
    ("pipeline.ingest.load", "quarantine_rows", "quarantine"),
    ("pipeline.ingest.load", "record_flags", "flags"),
    ("pipeline.ingest.load", "refresh_date_spans", "date spans (1 UPDATE)"),
    ("pipeline.ingest.load", "record_input", "manifest"),
]

#: The calendar's build in a new process that has imported what the stage's has.
_CALENDAR_CODE = """
import time
import pandas, pyarrow, sqlalchemy
from pipeline.ingest.load import ingest_paths
from pipeline.trading_calendar import DEFAULT_EXCHANGE, _calendar
started = time.thread_time()
_calendar(DEFAULT_EXCHANGE)
print(time.thread_time() - started)
"""


def step_seconds(folder: Path, path: Path) -> dict[str, tuple[float, float]]:
    """CPU and wall seconds of each of ``STEPS`` in one more ingest of ``path`` into a
    fresh SQLite database, the whole stage with its commit, and (in a new process) the
    CPU seconds of building the exchange calendar, import included."""
    import importlib
    import subprocess
    import sys
    from contextlib import ExitStack
    from unittest import mock

    spent: dict[str, list[float]] = {}

    def timed(label: str, function):  # noqa: ANN001, ANN202 - any step
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                total = spent.setdefault(label, [0.0, 0.0])
                total[0] += time.thread_time() - cpu
                total[1] += time.perf_counter() - wall

        return wrapper

    engine = open_database(f"sqlite:///{folder / 'steps.db'}")
    with ExitStack() as patches:
        for module_name, name, label in STEPS:
            module = importlib.import_module(module_name)
            wrapper = timed(label, getattr(module, name))
            patches.enter_context(mock.patch.object(module, name, wrapper))
        cpu, wall = time.thread_time(), time.perf_counter()
        with engine.begin() as conn:
            ingest_paths(conn, [path])
        whole = (time.thread_time() - cpu, time.perf_counter() - wall)
    engine.dispose()
    seconds = {label: tuple(spent.get(label, [0.0, 0.0])) for _, _, label in STEPS}
    seconds["whole stage and commit"] = whole
    built = subprocess.run(
        [sys.executable, "-c", _CALENDAR_CODE], capture_output=True, text=True, check=True
    )
    seconds["calendar, new process (background thread)"] = (float(built.stdout), float("nan"))
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=252_000)
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("PRICECAST_TEST_POSTGRES_URL"))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--steps", action="store_true", help="then profile one more ingest on SQLite, by step"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = []
    steps: dict[str, tuple[float, float]] = {}
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
            print(f"{engine}: ours {seconds:.2f} s, baseline {base:.2f} s", flush=True)
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
        if args.steps:
            steps = step_seconds(folder, path)
    print(f"{'engine':<9} {'rows':>8} {'ours s':>8} {'baseline s':>11} {'ratio':>6}")
    for row in results:
        print(
            f"{row['engine']:<9} {row['rows']:>8} {row['ours_seconds']:>8.2f} "
            f"{row['baseline_seconds']:>11.2f} {row['ratio']:>6.2f}"
        )
    print("ratio = baseline / ours; issue 14's target: at least 0.5")
    if steps:
        print(f"\n{'step (SQLite, the same file again)':<45} {'CPU s':>6} {'wall s':>6}")
        for label, (cpu, wall) in steps.items():
            print(f"{label:<45} {cpu:>6.3f} {wall:>6.3f}")
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "load_average_before": load_before,
                "load_average": load_after,
                "results": results,
                "steps_cpu_seconds": steps,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
