"""The incremental day's sequences and forecast stages, two versions of the code A/B.

Run ``python -m benchmarks.incremental_stages --tree A=PATH --tree B=PATH
[--tickers 1000] [--years 3] [--rounds 5] [--work DIR]``; see ``benchmarks/README.md``
("Incremental day: forecast and sequences stages") for what is measured.

On a shared, loaded machine one run of each version (``incremental_day``) cannot tell
a fifth of a stage from the noise. This benchmark prepares one state, then times the
two stages again and again, the versions alternating, each time on a fresh copy of
that state:

* the state (built once, with the code of this checkout): synthetic closes
  (``end_to_end.synthetic_closes``) in a SQLite ``prices`` table; as of the cut-off,
  the sequences, a one-epoch retrain and the forecasts; then every ticker's close of
  the next session;
* a trial (a subprocess whose ``PYTHONPATH`` is the version's tree, e.g. a
  ``git archive`` of the commit before): the state copied afresh, then the next
  session's sequences (``build_sequences(..., hand_off=True)``, as the daily run's
  stage: every file kept and appended to) and forecasts (``forecast``, with the
  cut-off's champion), each timed (wall, and CPU of every thread of the process),
  and SHA-256 digests of what they wrote (the ``sequence_files`` rows without their
  paths, each file's bytes, the forecast rows).

The report gives each version's median and minimum per stage; the digests must be
the same for every trial of every version, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.incremental_day import price_rows, run_day, synthetic_days
from pipeline.db.migrate import open_database
from pipeline.db.prices import upsert_prices

#: What a trial runs, in the version's tree: the two stages, timed, and the digests.
TRIAL = """
import datetime as dt, hashlib, json, sys, time
from pathlib import Path
import pandas as pd
from pipeline.db.forecasts import read_forecasts
from pipeline.db.migrate import open_database
from pipeline.db.sequences import read_sequence_files
from pipeline.model.forecast import forecast
from pipeline.sequences.build import build_sequences
from pipeline.trading_calendar import next_sessions

home, day = Path(sys.argv[1]), dt.date.fromisoformat(sys.argv[2])
engine = open_database(f"sqlite:///{home / 'pricecast.sqlite'}")
next_sessions(day, 1)  # the calendar loaded before the clock starts, as in a daily run
seconds, cpu = {}, {}
for name in ("sequences", "forecast"):
    with engine.begin() as conn:
        start, start_cpu = time.perf_counter(), time.process_time()
        if name == "sequences":
            build_sequences(conn, home, day, hand_off=True)
        else:
            forecast(conn, day)
        seconds[name] = time.perf_counter() - start
        cpu[name] = time.process_time() - start_cpu
with engine.connect() as conn:
    rows = pd.DataFrame(read_sequence_files(conn, day))
    files = hashlib.sha256()
    for path in rows["file_path"]:
        files.update(Path(path).read_bytes())
    rows = rows.drop(columns=["file_path"])
    forecasts = read_forecasts(conn, day)
digests = {
    "sequence_files rows": hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest(),
    "sequence files": files.hexdigest(),
    "forecasts": hashlib.sha256(forecasts.to_csv(index=False).encode()).hexdigest(),
}
engine.dispose()
print(json.dumps({"seconds": seconds, "cpu": cpu, "digests": digests}))
"""


def prepare(state: Path, tickers: int, years: int, seed: int) -> str:
    """Build the state in ``state``; the next session's date."""
    closes, cut, next_day = synthetic_days(tickers, years, seed)
    engine = open_database(f"sqlite:///{state / 'pricecast.sqlite'}")
    with engine.begin() as conn:
        upsert_prices(conn, price_rows(closes.iloc[:-1]))
    run_day(engine, state, cut, "retrain")
    with engine.begin() as conn:
        upsert_prices(conn, price_rows(closes.iloc[-1:]))
    engine.dispose()
    return str(next_day)


def trial(tree: Path, state: Path, work: Path, day: str) -> dict[str, Any]:
    """One trial of the version in ``tree`` on a fresh copy of ``state``."""
    home = work / "trial"
    shutil.rmtree(home)
    shutil.copytree(state, home)
    done = subprocess.run(
        [sys.executable, "-c", TRIAL, str(home), day],
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH, twice")
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="folder for the state")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    trees = dict(item.split("=", 1) for item in args.tree)
    with tempfile.TemporaryDirectory(prefix="pricecast-stages-", dir=args.work) as folder:
        work = Path(folder)
        # Prepared where the trials run: the paths the database records are theirs.
        home, state = work / "trial", work / "state"
        home.mkdir()
        day = prepare(home, args.tickers, args.years, args.seed)
        shutil.copytree(home, state)
        trials: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            # Alternate which version goes first, so neither always follows the other.
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                trials[name].append(trial(Path(trees[name]).resolve(), state, work, day))
    digests = {json.dumps(t["digests"], sort_keys=True) for ts in trials.values() for t in ts}
    lines = [
        f"{args.tickers} tickers x {args.years} years on SQLite, next session {day}, "
        f"{args.rounds} rounds (versions alternating)",
        "",
        "stage      | version | wall median |    min | CPU median |    min",
        "-----------+---------+-------------+--------+------------+-------",
    ]
    for stage in ("sequences", "forecast"):
        for name, runs in trials.items():
            wall = [run["seconds"][stage] for run in runs]
            cpu = [run["cpu"][stage] for run in runs]
            lines.append(
                f"{stage:<10} | {name:<7} | {statistics.median(wall):11.2f} | {min(wall):6.2f} "
                f"| {statistics.median(cpu):10.2f} | {min(cpu):6.2f}"
            )
    lines += ["", f"outputs identical across every trial: {len(digests) == 1}"]
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps({"day": day, "trials": trials}, indent=2) + "\n")
    if len(digests) != 1:
        raise SystemExit("the versions wrote different sequence files or forecasts")


if __name__ == "__main__":
    main()
