"""How fast ``upsert_prices`` loads a million rows, next to the database's own bulk path.

Run ``python -m benchmarks.upsert_prices [--rows N] [--json PATH]``; see
``benchmarks/README.md`` for what is measured and how to read it.

``--triggers`` measures instead what the ``price_revisions`` triggers cost an SQLite
load and what setting them aside saves (``pipeline.db.prices._without_idle_triggers``):
``python -m benchmarks.upsert_prices --triggers --rows 2520000 --tickers 1000``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from pipeline import columns as c
from pipeline.db.engine import connect
from pipeline.db.migrate import open_database
from pipeline.db.prices import SET_ASIDE_MIN_ROWS, upsert_prices
from pipeline.db.schema import prices, sequence_files
from pipeline.db.sequences import price_revisions_of, revision_triggers_present
from pipeline.errors import DatabaseUnavailableError

DEFAULT_JSON = Path(__file__).parent / "results" / "upsert_prices.json"
TRIGGERS_JSON = Path(__file__).parent / "results" / "upsert_prices_triggers.json"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FLOATS = (c.OPEN, c.HIGH, c.LOW, c.CLOSE, c.ADJ_CLOSE, c.VOLUME)
#: The page cache both SQLite contenders use; ``upsert_prices`` sets the same one.
SQLITE_CACHE = "PRAGMA cache_size = -131072"


def synthetic_frame(rows: int, tickers: int, seed: int) -> pd.DataFrame:
    """``rows`` prices: ``tickers`` tickers on consecutive business days, GBM closes.

    Every column of ``PRICE_COLUMNS`` is filled; sorted by ticker and date, as
    the readers produce them; source ``bench.csv``.
    """
    days = math.ceil(rows / tickers)
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2010-01-04", periods=days)
    steps = rng.normal(0.0003, 0.02, size=(tickers, days))
    close = (20.0 + rng.uniform(0, 200, size=(tickers, 1))) * np.exp(np.cumsum(steps, axis=1))
    close = close.ravel()[:rows]
    count = len(close)
    open_ = close * (1 + rng.normal(0, 0.005, count))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.005, count)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.005, count)))
    names = np.array([f"T{index:04d}" for index in range(tickers)], dtype=object)
    frame = pd.DataFrame(
        {
            c.TICKER: np.repeat(names, days)[:rows],
            c.TRADE_DATE: np.tile(dates.to_numpy(), tickers)[:rows],
            c.OPEN: open_,
            c.HIGH: high,
            c.LOW: low,
            c.CLOSE: close,
            c.ADJ_CLOSE: close * 0.98,
            c.VOLUME: rng.integers(100_000, 10_000_000, count).astype(np.float64),
            c.SOURCE: "bench.csv",
        }
    )
    return frame.loc[:, list(c.PRICE_COLUMNS)]


def prebuilt_rows(frame: pd.DataFrame, dates_as_text: bool) -> list[tuple]:
    """The rows as plain tuples, built before any baseline clock starts."""
    dates = pd.to_datetime(frame[c.TRADE_DATE])
    date_values = dates.dt.strftime("%Y-%m-%d").tolist() if dates_as_text else list(dates.dt.date)
    return list(
        zip(
            frame[c.TICKER].tolist(),
            date_values,
            *(frame[name].tolist() for name in FLOATS),
            frame[c.SOURCE].tolist(),
            strict=True,
        )
    )


@dataclass
class Result:
    """One measurement: the median of its repetitions."""

    engine: str
    operation: str
    rows: int
    seconds: float
    runs: list[float]
    baseline: str | None = None
    baseline_seconds: float | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    @property
    def baseline_rows_per_second(self) -> float | None:
        return None if self.baseline_seconds is None else self.rows / self.baseline_seconds

    @property
    def ratio(self) -> float | None:
        rate = self.baseline_rows_per_second
        return None if rate is None else self.rows_per_second / rate

    def as_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "rows_per_second": self.rows_per_second,
            "baseline_rows_per_second": self.baseline_rows_per_second,
            "ratio": self.ratio,
        }


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_result(engine: str, operation: str, rows: int, runs: list[float]) -> Result:
    return Result(engine, operation, rows, statistics.median(runs), runs)


# ------------------------------------------------------------------------------- SQLite


def bench_sqlite(
    frame: pd.DataFrame, repeat: int, log: Callable[[str], None]
) -> tuple[list[Result], list[str]]:
    """``upsert_prices`` against ``sqlite3.executemany`` of pre-built tuples."""
    tuples = prebuilt_rows(frame, dates_as_text=True)
    names = ", ".join(c.PRICE_COLUMNS)
    updates = ", ".join(f"{name} = excluded.{name}" for name in c.PRICE_COLUMNS[2:])
    statement = (
        f"INSERT INTO prices ({names}) VALUES ({', '.join('?' for _ in c.PRICE_COLUMNS)}) "
        f"ON CONFLICT (ticker, trade_date) DO UPDATE SET {updates}"
    )
    runs: dict[str, list[float]] = {key: [] for key in ("ours1", "ours2", "base1", "base2")}
    indexes: list[str] = []
    for run in range(repeat):
        with tempfile.TemporaryDirectory(prefix="pricecast-bench-") as folder:
            engine = open_database(f"sqlite:///{folder}/ours.db")  # the current schema
            if not indexes:
                with engine.connect() as conn:
                    found = conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type = 'index' "
                        "AND tbl_name = 'prices' ORDER BY name"
                    )
                    indexes = [row[0] for row in found]
                log(f"sqlite {sqlite3.sqlite_version}, prices indexes: {'; '.join(indexes)}")

            def load(engine: sa.Engine = engine) -> None:
                with engine.begin() as conn:
                    upsert_prices(conn, frame)

            runs["ours1"].append(timed(load))
            runs["ours2"].append(timed(load))
            with engine.connect() as conn:
                stored = conn.execute(sa.select(sa.func.count()).select_from(prices)).scalar()
            assert stored == len(frame), (stored, len(frame))
            engine.dispose()

            path = f"{folder}/baseline.db"
            ddl = sa.create_engine(f"sqlite:///{path}")
            prices.to_metadata(sa.MetaData()).create(ddl)  # the same table (schema.py)
            ddl.dispose()
            raw = sqlite3.connect(path)
            raw.execute(SQLITE_CACHE)

            def baseline(raw: sqlite3.Connection = raw) -> None:
                raw.executemany(statement, tuples)
                raw.commit()

            runs["base1"].append(timed(baseline))
            runs["base2"].append(timed(baseline))
            raw.close()
        log(
            f"sqlite run {run + 1}: ours {runs['ours1'][-1]:.2f} s / {runs['ours2'][-1]:.2f} s, "
            f"executemany {runs['base1'][-1]:.2f} s / {runs['base2'][-1]:.2f} s"
        )
    results = []
    for load, label in (("1", "first load (empty table)"), ("2", "second load (same rows)")):
        result = median_result("sqlite", label, len(frame), runs[f"ours{load}"])
        result.baseline = (
            "sqlite3 executemany of pre-built tuples, same INSERT ... ON CONFLICT, "
            "same 128 MiB page cache"
        )
        result.baseline_seconds = statistics.median(runs[f"base{load}"])
        results.append(result)
    return results, indexes


# ------------------------------------------------------------------- SQLite, triggers

#: Repetitions of each load of new days within a run (each rolled back).
DAY_REPEAT = 5
#: The days after every file's span (a catch-up after a week away).
NEW_DAYS = 5


def _file_rows(tickers: list[str], through: dt.date) -> list[dict[str, object]]:
    """A ``sequence_files`` row per ticker, its span ending on ``through``."""
    return [
        {
            c.TICKER: ticker,
            c.AS_OF_DATE: through,
            "data_through": through,
            "window": 60,
            "scaling": "minmax",
            "validation_fraction": 0.1,
            "price_field": "close",
            "scaler_params": {},
            "fit_start": dt.date(2010, 1, 4),
            "fit_end": through,
            "train_windows": 1,
            "validation_windows": 1,
            "file_path": f"/{ticker}.parquet",
            "sha256": "0" * 64,
        }
        for ticker in tickers
    ]


def bench_triggers(
    frame: pd.DataFrame, repeat: int, log: Callable[[str], None]
) -> tuple[list[Result], dict[str, dict[str, float]]]:
    """``upsert_prices`` on SQLite with the ``price_revisions`` triggers firing
    (``keep_triggers=True``) and as it runs, setting them aside when they would record
    nothing: all but the last ``NEW_DAYS`` days as a first load (no sequence file yet),
    then, each file's span ending the day before, the first new day (below
    ``SET_ASIDE_MIN_ROWS`` at 1,000 tickers: the triggers stay), every new day, and
    every new day with one close revised within a span (the triggers fire either way:
    what the check costs). Also returns the median CPU seconds of each (SQLite works
    in this process: less sensitive than the wall clock to a loaded machine)."""
    dates = pd.to_datetime(frame[c.TRADE_DATE])
    new_days = sorted(dates.unique())[-NEW_DAYS:]
    history, new = frame[dates < new_days[0]], frame[dates >= new_days[0]]
    day = frame[dates == new_days[0]]
    through = dates[dates < new_days[0]].max().date()
    first = history.iloc[[0]].copy()  # the first ticker's first close, changed
    first[c.CLOSE] = first[c.CLOSE] * 1.01
    revised = pd.concat([first, new], ignore_index=True)
    tickers = sorted(frame[c.TICKER].unique())
    recorded = {tickers[0]: pd.Timestamp(first[c.TRADE_DATE].iloc[0]).date()}
    loads = (
        ("first load, no sequence file", history, {}),
        ("a new day after every file", day, {}),
        (f"{NEW_DAYS} new days after every file", new, {}),
        (f"{NEW_DAYS} new days, one close revised in a span", revised, recorded),
    )
    runs: dict[tuple[str, bool], list[float]] = {
        (name, keep): [] for name, _, _ in loads for keep in (True, False)
    }
    cpu: dict[tuple[str, bool], list[float]] = {key: [] for key in runs}
    for run in range(repeat):
        # Alternate which goes first, so that neither always meets a colder machine.
        for keep in (True, False) if run % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory(prefix="pricecast-bench-") as folder:
                engine = open_database(f"sqlite:///{folder}/triggers.db")

                def load(rows: pd.DataFrame, keep: bool = keep, engine: sa.Engine = engine) -> None:
                    with engine.begin() as conn:
                        upsert_prices(conn, rows, keep_triggers=keep)

                started, used = time.perf_counter(), time.process_time()
                load(history)
                runs[(loads[0][0], keep)].append(time.perf_counter() - started)
                cpu[(loads[0][0], keep)].append(time.process_time() - used)
                with engine.begin() as conn:
                    conn.execute(sa.insert(sequence_files), _file_rows(tickers, through))
                    assert revision_triggers_present(conn)
                    assert price_revisions_of(conn) == {}
                for name, rows, expected in loads[1:]:
                    for _ in range(DAY_REPEAT):
                        # The clock stops before the rollback that restores the table.
                        with engine.connect() as conn, conn.begin() as transaction:
                            started, used = time.perf_counter(), time.process_time()
                            upsert_prices(conn, rows, keep_triggers=keep)
                            runs[(name, keep)].append(time.perf_counter() - started)
                            cpu[(name, keep)].append(time.process_time() - used)
                            revisions = price_revisions_of(conn)
                            assert revisions == expected, revisions
                            transaction.rollback()
                with engine.connect() as conn:
                    stored = conn.execute(sa.select(sa.func.count()).select_from(prices)).scalar()
                    assert stored == len(history) and revision_triggers_present(conn)
                engine.dispose()
        log(
            f"triggers run {run + 1}: "
            + ", ".join(
                f"{name} {runs[(name, True)][-1]:.3f} s firing / {runs[(name, False)][-1]:.3f} s"
                for name, _, _ in loads
            )
        )
    results = []
    for name, rows, _ in loads:
        result = median_result("sqlite", name, len(rows), runs[(name, False)])
        result.baseline = "the same load with the triggers firing (keep_triggers=True)"
        result.baseline_seconds = statistics.median(runs[(name, True)])
        results.append(result)
    cpu_medians = {
        name: {
            "firing": statistics.median(cpu[(name, True)]),
            "set_aside": statistics.median(cpu[(name, False)]),
        }
        for name, _, _ in loads
    }
    return results, cpu_medians


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def scratch_postgres(server_url: str) -> Iterator[str]:
    """A new database on the server of ``server_url``, dropped afterwards."""
    admin = connect(server_url)
    name = f"pricecast_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def libpq_dsn(url: str) -> str:
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def copy_rows(
    conn: psycopg.Connection, table: str, tuples: list[tuple], commit: bool = True
) -> None:
    """psycopg's binary COPY of pre-built tuples."""
    types = ["text", "date", *["float8"] * len(FLOATS), "text"]
    with conn.cursor() as cursor:
        statement = f"COPY {table} ({', '.join(c.PRICE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in tuples:
                copy.write_row(row)
    if commit:
        conn.commit()


def one_statement_upsert(conn: psycopg.Connection, tuples: list[tuple]) -> None:
    """The plain way: COPY into a TEMP table, then one INSERT ... ON CONFLICT DO UPDATE ... WHERE.

    Same rules as ``upsert_prices`` (unchanged rows skipped, source precedence).
    """
    names = ", ".join(c.PRICE_COLUMNS)
    updated = c.PRICE_COLUMNS[2:]
    changed = " OR ".join(f"prices.{n} IS DISTINCT FROM excluded.{n}" for n in updated)
    later = 'excluded.source COLLATE "C" >= prices.source COLLATE "C"'
    rule = (
        "strpos(excluded.source, '://') > 0 OR prices.source IS NULL "
        f"OR strpos(prices.source, '://') > 0 OR {later}"
    )
    conn.execute("CREATE TEMPORARY TABLE bench_stage (LIKE prices) ON COMMIT DROP")
    copy_rows(conn, "bench_stage", tuples, commit=False)
    conn.execute(
        f"INSERT INTO prices ({names}) SELECT {names} FROM bench_stage "
        f"ON CONFLICT (ticker, trade_date) DO UPDATE SET "
        + ", ".join(f"{n} = excluded.{n}" for n in updated)
        + f" WHERE ({changed}) AND ({rule})"
    )
    conn.commit()


def checkpoint(conn: psycopg.Connection) -> None:
    """Start every measurement with no dirty buffers left by the one before."""
    with contextlib.suppress(psycopg.Error):
        conn.execute("CHECKPOINT")
    conn.commit()


def bench_postgres(
    frame: pd.DataFrame, repeat: int, server_url: str, log: Callable[[str], None]
) -> tuple[list[Result], str, list[str]]:
    """``upsert_prices`` against psycopg's COPY into an UNLOGGED table, and into ``prices``."""
    tuples = prebuilt_rows(frame, dates_as_text=False)
    runs: dict[str, list[float]] = {
        key: []
        for key in ("ours1", "ours2", "base1", "base2", "keyed", "direct", "plain1", "plain2")
    }
    with scratch_postgres(server_url) as url:
        engine = open_database(url)  # the current schema, migrations included
        raw = psycopg.connect(libpq_dsn(url))
        version = raw.execute("SHOW server_version").fetchone()[0]
        indexes = [
            row[0]
            for row in raw.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'prices' ORDER BY indexname"
            )
        ]
        log(f"postgresql {version}, prices indexes: {'; '.join(indexes)}")
        raw.execute("CREATE UNLOGGED TABLE bench_copy (LIKE prices)")
        key = ", ".join(column.name for column in prices.primary_key.columns)
        raw.execute(f"CREATE UNLOGGED TABLE bench_keyed (LIKE prices, PRIMARY KEY ({key}))")
        raw.commit()

        def load() -> None:
            with engine.begin() as conn:
                upsert_prices(conn, frame)

        for run in range(repeat):
            raw.execute("TRUNCATE prices")
            checkpoint(raw)
            runs["ours1"].append(timed(load))
            checkpoint(raw)
            runs["ours2"].append(timed(load))
            stored = raw.execute("SELECT count(*) FROM prices").fetchone()[0]
            assert stored == len(frame), (stored, len(frame))

            raw.execute("TRUNCATE bench_copy")
            checkpoint(raw)
            runs["base1"].append(timed(lambda: copy_rows(raw, "bench_copy", tuples)))
            raw.execute("TRUNCATE bench_copy")
            checkpoint(raw)
            runs["base2"].append(timed(lambda: copy_rows(raw, "bench_copy", tuples)))

            raw.execute("TRUNCATE bench_keyed")
            checkpoint(raw)
            runs["keyed"].append(timed(lambda: copy_rows(raw, "bench_keyed", tuples)))

            raw.execute("TRUNCATE prices")
            checkpoint(raw)
            runs["direct"].append(timed(lambda: copy_rows(raw, "prices", tuples)))

            raw.execute("TRUNCATE prices")
            checkpoint(raw)
            runs["plain1"].append(timed(lambda: one_statement_upsert(raw, tuples)))
            checkpoint(raw)
            runs["plain2"].append(timed(lambda: one_statement_upsert(raw, tuples)))
            log(
                f"postgresql run {run + 1}: ours {runs['ours1'][-1]:.2f} s / "
                f"{runs['ours2'][-1]:.2f} s, COPY unlogged {runs['base1'][-1]:.2f} s / "
                f"{runs['base2'][-1]:.2f} s, COPY unlogged with key {runs['keyed'][-1]:.2f} s, "
                f"COPY into prices {runs['direct'][-1]:.2f} s, "
                f"one-statement upsert {runs['plain1'][-1]:.2f} s / {runs['plain2'][-1]:.2f} s"
            )
        raw.close()
        engine.dispose()
    results = []
    for load, label in (("1", "first load (empty table)"), ("2", "second load (same rows)")):
        result = median_result("postgresql", label, len(frame), runs[f"ours{load}"])
        result.baseline = "psycopg binary COPY of pre-built tuples into an UNLOGGED table"
        result.baseline_seconds = statistics.median(runs[f"base{load}"])
        results.append(result)
    for key, label in (
        ("keyed", "reference: COPY, UNLOGGED with primary key"),
        ("direct", "reference: COPY into empty prices"),
        ("plain1", "reference: one-statement upsert, first load"),
        ("plain2", "reference: one-statement upsert, second load"),
    ):
        results.append(median_result("postgresql", label, len(frame), runs[key]))
    return results, version, indexes


# ------------------------------------------------------------------------------ report


def format_table(results: list[Result], baseline: str = "baseline rows/s", digits: int = 2) -> str:
    header = ("engine", "operation", "seconds", "rows/s", baseline, "ratio")
    lines = [header]
    for result in results:
        base = result.baseline_rows_per_second
        lines.append(
            (
                result.engine,
                result.operation,
                f"{result.seconds:.{digits}f}",
                f"{result.rows_per_second:,.0f}",
                "" if base is None else f"{base:,.0f}",
                "" if result.ratio is None else f"{result.ratio:.2f}",
            )
        )
    widths = [max(len(line[index]) for line in lines) for index in range(len(header))]
    rendered = []
    for number, line in enumerate(lines):
        cells = [
            cell.ljust(width) if index < 2 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        rendered.append(" | ".join(cells).rstrip())
        if number == 0:
            rendered.append("-+-".join("-" * width for width in widths))
    return "\n".join(rendered)


def compare_with_references(results: list[Result]) -> list[str]:
    """Lines relating ``upsert_prices`` on PostgreSQL to the reference rows."""
    found = {(result.engine, result.operation): result for result in results}
    pairs = (
        ("first load (empty table)", "reference: COPY into empty prices"),
        ("first load (empty table)", "reference: one-statement upsert, first load"),
        ("second load (same rows)", "reference: one-statement upsert, second load"),
    )
    lines = []
    for ours, reference in pairs:
        if ("postgresql", ours) in found and ("postgresql", reference) in found:
            share = found[("postgresql", reference)].seconds / found[("postgresql", ours)].seconds
            lines.append(f"postgresql {ours}: {share:.2f} x the speed of {reference[11:]}")
    return lines


def machine_info(postgres_version: str | None, load_before: tuple) -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "psycopg": psycopg.__version__,
        "sqlalchemy": sa.__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.upsert_prices", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to load (1000000)")
    parser.add_argument("--tickers", type=int, default=400, help="tickers they spread over (400)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (3)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic prices (42)")
    parser.add_argument(
        "--engines", default="sqlite,postgresql", help="comma-separated (sqlite,postgresql)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PRICECAST_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="server to create the scratch database on; only its credentials and host are used "
        f"(default PRICECAST_TEST_POSTGRES_URL or {DEFAULT_POSTGRES})",
    )
    parser.add_argument(
        "--triggers",
        action="store_true",
        help="measure the price_revisions triggers on SQLite instead (JSON by default "
        f"{TRIGGERS_JSON})",
    )
    parser.add_argument("--json", type=Path, default=None, help=f"({DEFAULT_JSON})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    engines = {name.strip() for name in args.engines.split(",") if name.strip()}

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    load_before = os.getloadavg()
    frame = synthetic_frame(args.rows, args.tickers, args.seed)
    log(f"{len(frame):,} rows, {args.tickers} tickers, {args.repeat} runs per measurement")
    if args.triggers:
        return report_triggers(*bench_triggers(frame, args.repeat, log), args, load_before)
    results: list[Result] = []
    postgres_version = None
    notes: list[str] = []
    schema: dict[str, list[str]] = {}
    if "sqlite" in engines:
        found_sqlite, schema["sqlite"] = bench_sqlite(frame, args.repeat, log)
        results += found_sqlite
    if "postgresql" in engines:
        try:
            found, postgres_version, schema["postgresql"] = bench_postgres(
                frame, args.repeat, args.postgres_url, log
            )
            results += found
        except DatabaseUnavailableError as exc:
            notes.append(f"PostgreSQL skipped: {exc}")
            log(notes[-1])
    comparisons = compare_with_references(results)
    print()
    print(format_table(results))
    for line in comparisons:
        print(line)
    path = args.json or DEFAULT_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "upsert_prices",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": len(frame),
        "tickers": args.tickers,
        "repeat": args.repeat,
        "statistic": "median",
        "results": [result.as_json() for result in results],
        "comparisons": comparisons,
        "prices_indexes": schema,
        "machine": machine_info(postgres_version, load_before),
        "notes": notes,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {path}")
    return 0


def report_triggers(
    results: list[Result],
    cpu: dict[str, dict[str, float]],
    args: argparse.Namespace,
    load_before: tuple,
) -> int:
    """Print the ``--triggers`` table and write its JSON."""
    print()
    print(format_table(results, baseline="rows/s firing", digits=3))
    print("ratio: the speed with the triggers set aside when idle over the speed with them firing")
    for name, seconds in cpu.items():
        print(
            f"CPU seconds, {name}: {seconds['set_aside']:.3f} set aside when idle, "
            f"{seconds['firing']:.3f} firing"
        )
    path = args.json or TRIGGERS_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "upsert_prices --triggers",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "tickers": args.tickers,
        "repeat": args.repeat,
        "day_repeat": DAY_REPEAT,
        "new_days": NEW_DAYS,
        "set_aside_min_rows": SET_ASIDE_MIN_ROWS,
        "statistic": "median",
        "results": [result.as_json() for result in results],
        "cpu_seconds": cpu,
        "machine": machine_info(None, load_before),
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
