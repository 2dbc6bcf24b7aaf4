"""The stages of an incremental day at many tickers, on SQLite, with their profiles.

Run ``python -m benchmarks.incremental_day [--tickers 1000] [--years 3] [--profile DIR]``;
see ``benchmarks/README.md`` (``incremental_day``) for what is measured.

Synthetic closes (``end_to_end.synthetic_closes``) go straight into the
``prices`` table (no ingest: ``benchmarks/ingest_rate.py`` measures that). As of
the cut-off: sequences, a retrain of one epoch (its accuracy is not the point),
forecasts. Then every ticker's close of the next session, and the day's
sequences, training (mode ``auto``: the champion is judged, then fine-tuned)
and forecasts, each timed and, with ``--profile``, profiled (``cProfile``,
the top functions by cumulative time written beside the JSON), and SHA-256 digests
of what the day wrote (``output_digests``: sequence rows, forecast rows), the same for
two versions of the code that write the same. Everything runs
in this process (``workers=0``), so the times are the stages' own, without
Prefect or a worker's start-up.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import functools
import hashlib
import io
import json
import platform
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.end_to_end import synthetic_closes
from pipeline import columns as c
from pipeline.db.forecasts import read_forecasts
from pipeline.db.migrate import open_database
from pipeline.db.prices import read_close_arrays, upsert_prices
from pipeline.db.sequences import read_sequence_files
from pipeline.model.config import ModelConfig
from pipeline.model.forecast import forecast
from pipeline.model.train import train
from pipeline.sequences.build import build_sequences, sequence_path
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.files import encode_sequence_file, windows_table, write_sequence_file

DEFAULT_JSON = Path(__file__).parent / "results" / "incremental_day.json"


def price_rows(closes: pd.DataFrame) -> pd.DataFrame:
    """``closes`` (dates by tickers) as rows of the ``prices`` table."""
    long = closes.stack().rename(c.CLOSE).reset_index()
    long.columns = [c.TRADE_DATE, c.TICKER, c.CLOSE]
    long[c.TRADE_DATE] = pd.to_datetime(long[c.TRADE_DATE])
    for name in (c.OPEN, c.HIGH, c.LOW, c.ADJ_CLOSE):
        long[name] = long[c.CLOSE]
    long[c.VOLUME] = 1_000_000
    long[c.SOURCE] = "synthetic.csv"
    return long[list(c.PRICE_COLUMNS)]


def sequence_breakdown(conn: Any, home: Path, day: dt.date) -> dict[str, float]:
    """Where a full build of the sequences goes, step by step, on one thread (CPU
    seconds): every close read from the database, each ticker's windows into an Arrow
    table, the Parquet encoding, and the digest and write of the file. A new day
    builds this way only the tickers without a usable file or with revised closes;
    the others keep their closes from their files and read only the new ones
    (``pipeline.sequences.build``), which the stage's own time above includes."""
    config = SequenceConfig()
    cpu = {"read closes": 0.0, "windows and scaling": 0.0, "parquet encode": 0.0}
    start = time.process_time()
    closes = read_close_arrays(conn, day)
    cpu["read closes"] = time.process_time() - start
    cpu["write (digest, compare, rename)"] = 0.0
    for ticker, rows in closes.runs():
        start = time.process_time()
        table, _ = windows_table(ticker, closes.dates[rows], closes.closes[rows], config)
        cpu["windows and scaling"] += time.process_time() - start
        start = time.process_time()
        encode_sequence_file(table)
        cpu["parquet encode"] += time.process_time() - start
        start = time.process_time()
        write_sequence_file(sequence_path(home, ticker), table)  # the same bytes: no write
        cpu["write (digest, compare, rename)"] += time.process_time() - start
    cpu["write (digest, compare, rename)"] -= cpu["parquet encode"]  # it encodes again
    return cpu


def output_digests(conn: Any, day: dt.date) -> dict[str, str]:
    """SHA-256 digests of what the incremental day wrote, to compare two versions of the
    code: the sequence files (each ticker's recorded file digest, and its row) and the
    forecast rows (every column, floats as their shortest exact text)."""
    files = pd.DataFrame(read_sequence_files(conn, day)).drop(columns=["file_path"])
    forecasts = read_forecasts(conn, day).sort_values([c.TICKER, c.HORIZON])
    return {
        "sequence_files": hashlib.sha256(files.to_csv(index=False).encode()).hexdigest(),
        "forecasts": hashlib.sha256(forecasts.to_csv(index=False).encode()).hexdigest(),
    }


#: The model of both days: one epoch (its accuracy is not the point).
DAY_MODEL = ModelConfig(epochs=1, finetune_epochs=1)


def synthetic_days(tickers: int, years: int, seed: int) -> tuple[pd.DataFrame, dt.date, dt.date]:
    """``years`` of synthetic closes and one more session: the closes, the cut-off (the
    backfill's as-of date) and the next session (the incremental day)."""
    closes = synthetic_closes(tickers, years * 252 + 1, seed)
    return closes, closes.index[-2], closes.index[-1]


def run_day(
    engine: Any,
    home: Path,
    day: dt.date,
    mode: str,
    stage: Callable[..., Any] | None = None,
) -> Any:
    """The sequences, the training (``DAY_MODEL``, in this process) and the forecasts as
    of ``day``, each in its own transaction and called through ``stage(name, function,
    *args, **kwargs)`` when given (to time it); the training's result."""

    def call(name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return stage(name, function, *args, **kwargs) if stage else function(*args, **kwargs)

    with engine.begin() as conn:
        call("sequences", build_sequences, conn, home, day)
    with engine.begin() as conn:
        trained = call(
            "train", train, conn, home, day, mode=mode, model_config=DAY_MODEL, workers=0
        )
    with engine.begin() as conn:
        call("forecast", forecast, conn, day)
    return trained


def measure(tickers: int, years: int, seed: int, profile: Path | None) -> dict[str, Any]:
    closes, cut, next_day = synthetic_days(tickers, years, seed)
    timings: dict[str, dict[str, float]] = {"backfill": {}, "incremental": {}}
    cpu: dict[str, dict[str, float]] = {"backfill": {}, "incremental": {}}

    def timed(part: str, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        profiler = cProfile.Profile() if profile is not None and part == "incremental" else None
        start, start_cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        value = call(*args, **kwargs)
        if profiler is not None:
            profiler.disable()
        timings[part][name] = time.perf_counter() - start
        cpu[part][name] = time.process_time() - start_cpu
        if profiler is not None and profile is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            profile.mkdir(parents=True, exist_ok=True)
            (profile / f"incremental-{name}.txt").write_text(out.getvalue())
        return value

    with tempfile.TemporaryDirectory(prefix="pricecast-incremental-") as folder:
        home = Path(folder)
        engine = open_database(f"sqlite:///{home / 'pricecast.sqlite'}")
        with engine.begin() as conn:
            upsert_prices(conn, price_rows(closes.iloc[:-1]))
        for part, day in (("backfill", cut), ("incremental", next_day)):
            if part == "incremental":
                with engine.begin() as conn:
                    upsert_prices(conn, price_rows(closes.iloc[-1:]))
            mode = "retrain" if part == "backfill" else "auto"
            trained = run_day(engine, home, day, mode, functools.partial(timed, part))
            timings[part]["training action"] = trained.action  # type: ignore[assignment]
        with engine.connect() as conn:
            outputs = output_digests(conn, next_day)
            breakdown = sequence_breakdown(conn, home, next_day)
        engine.dispose()
    return {
        "tickers": tickers,
        "years": years,
        "cut_off": str(cut),
        "seconds": timings,
        "cpu_seconds": cpu,
        "sequences_breakdown": breakdown,
        "outputs": outputs,
        "machine": platform.node(),
        "date": dt.date.today().isoformat(),
    }


def report(result: dict[str, Any]) -> str:
    seconds = result["seconds"]
    lines = [
        f"{result['tickers']} tickers x {result['years']} years on SQLite, "
        f"cut-off {result['cut_off']} (stages in this process, no Prefect)",
        "",
        f"{'stage':<12} | backfill | incremental | incremental CPU (all threads)",
        f"{'-' * 12}-+----------+-------------+-----------------------------",
    ]
    cpu = result["cpu_seconds"]["incremental"]
    for name in ("sequences", "train", "forecast"):
        lines.append(
            f"{name:<12} | {seconds['backfill'][name]:8.2f} | "
            f"{seconds['incremental'][name]:11.2f} | {cpu[name]:28.2f}"
        )
    lines.append(
        f"{'training':<12} | {seconds['backfill']['training action']:>8} | "
        f"{seconds['incremental']['training action']:>11}"
    )
    lines += ["", "sequences stage, one thread, CPU seconds:"]
    lines += [f"  {name:<34} {value:6.2f}" for name, value in result["sequences_breakdown"].items()]
    lines += ["", "outputs (SHA-256, to compare versions):"]
    lines += [f"  {name:<34} {value[:16]}" for name, value in result["outputs"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--profile", type=Path, default=None, help="folder for the profiles")
    args = parser.parse_args(argv)
    result = measure(args.tickers, args.years, args.seed, args.profile)
    print(report(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
