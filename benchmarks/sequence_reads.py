"""The train stage's read of the sequences: from the files (one thread, threads) or handed over.

Run ``python -m benchmarks.sequence_reads [--tickers 1000] [--years 10] [--repeat 3]``;
see ``benchmarks/README.md`` (``sequence_reads``) for what is measured.

Synthetic closes (``end_to_end.synthetic_closes``) go straight into a SQLite
``prices`` table, the sequences are built once as of the last day
(``build_sequences(..., hand_off=True)``, as the daily run's sequences stage), then
``read_sequences`` (what the train stage calls first) reads every ticker's windows
back, ``--repeat`` times each way, the files in the page cache:

* **handed over**: the windows the build kept (``pipeline.sequences.handoff``) are
  taken; each file is still read and its SHA-256 checked, not decoded (before each
  repeat after the first, the windows the last one took are kept again, as a build
  keeps them);
* **files, one thread**: each file read, its SHA-256 checked and decoded in turn
  (the train stage before it read on threads);
* **files, threads**: the same on ``READ_THREADS`` threads (``BUILD_THREADS``).

Wall and CPU seconds (every thread of the process) of each read, the median of the
repeats; the windows every way reads must be the same, field by field and bit for
bit, or the benchmark fails.

``python -m benchmarks.sequence_reads --tickers 1000 --years 10 --repeat 3`` on the
2-core machine at load average 5 to 6.5 (2026-12-02): handed over 0.25 s wall (0.21 s
CPU), files on one thread 2.86 s (1.58 s), files on 2 threads 2.25 s (1.47 s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.end_to_end import synthetic_closes
from benchmarks.incremental_day import price_rows
from pipeline import columns as c
from pipeline.db.migrate import open_database
from pipeline.db.prices import upsert_prices
from pipeline.sequences import handoff, read
from pipeline.sequences.build import build_sequences
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.read import SequenceFiles, read_sequences

DEFAULT_JSON = Path(__file__).parent / "results" / "sequence_reads.json"


@contextlib.contextmanager
def read_threads(threads: int) -> Iterator[None]:
    """``read_sequences`` reading on ``threads`` threads for a while."""
    kept = read.READ_THREADS
    read.READ_THREADS = threads
    try:
        yield
    finally:
        read.READ_THREADS = kept


def same_windows(one: SequenceFiles, other: SequenceFiles) -> bool:
    """Whether two reads give the same tickers in the same order and, for each, the same
    closes and target dates (dtype and bits) and the same split and window."""
    if list(one.windows) != list(other.windows):
        return False
    for ticker, mine in one.windows.items():
        theirs = other.windows[ticker]
        if (mine.n_train, mine.window) != (theirs.n_train, theirs.window):
            return False
        for name in ("closes", "target_dates"):
            a, b = getattr(mine, name), getattr(theirs, name)
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                return False
    return True


def measure(tickers: int, years: int, seed: int, repeat: int) -> dict[str, Any]:
    closes = synthetic_closes(tickers, years * 252 + 1, seed)
    day = closes.index[-1]
    config = SequenceConfig()
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    reads: dict[str, SequenceFiles] = {}

    def timed(name: str, call: Callable[[], SequenceFiles]) -> None:
        start, start_cpu = time.perf_counter(), time.process_time()
        reads[name] = call()
        seconds.setdefault(name, []).append(time.perf_counter() - start)
        cpu.setdefault(name, []).append(time.process_time() - start_cpu)

    with tempfile.TemporaryDirectory(prefix="pricecast-sequence-reads-") as folder:
        home = Path(folder)
        engine = open_database(f"sqlite:///{home / 'pricecast.sqlite'}")
        with engine.begin() as conn:
            upsert_prices(conn, price_rows(closes))
        start = time.perf_counter()
        with engine.begin() as conn:
            build_sequences(conn, home, day, config=config, hand_off=True)
        build_seconds = time.perf_counter() - start
        with engine.connect() as conn:

            def read_back() -> SequenceFiles:
                return read_sequences(conn, home, day, None, config)

            for _ in range(repeat):
                if not handoff.kept():
                    files = reads["handed over"]
                    handoff.keep(
                        {
                            (row["file_path"], row["sha256"]): files.windows[row[c.TICKER]]
                            for row in files.rows
                        }
                    )
                timed("handed over", read_back)
                assert not handoff.kept()
                with read_threads(1):
                    timed("files, one thread", read_back)
                timed(f"files, {read.READ_THREADS} threads", read_back)
        engine.dispose()
    first, *others = reads.values()
    if not all(same_windows(first, other) for other in others):
        raise AssertionError("the reads gave different windows")
    return {
        "tickers": tickers,
        "years": years,
        "closes": int(closes.size),
        "repeat": repeat,
        "build_seconds": build_seconds,
        "seconds": {name: statistics.median(values) for name, values in seconds.items()},
        "cpu_seconds": {name: statistics.median(values) for name, values in cpu.items()},
        "all_seconds": seconds,
        "same_windows": True,
        "windows_mb": sum(w.closes.nbytes + w.target_dates.nbytes for w in first.windows.values())
        / 1e6,
        "machine": platform.node(),
        "date": dt.date.today().isoformat(),
        "numpy": np.__version__,
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"read_sequences of {result['tickers']} tickers x {result['years']} years "
        f"({result['closes']:,} closes, {result['windows_mb']:.0f} MB of windows) on SQLite; "
        f"median of {result['repeat']}",
        "",
        f"{'read':<22} | wall s | CPU s (all threads)",
        f"{'-' * 22}-+--------+--------------------",
    ]
    for name, wall in result["seconds"].items():
        lines.append(f"{name:<22} | {wall:6.2f} | {result['cpu_seconds'][name]:6.2f}")
    lines += ["", f"(the build before them: {result['build_seconds']:.1f} s wall)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    result = measure(args.tickers, args.years, args.seed, args.repeat)
    print(report(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
