"""The whole pipeline on synthetic prices, next to the tutorial's loop on the same tickers.

Run ``python -m benchmarks.end_to_end [--tickers 100] [--years 10] [--json PATH]``;
see ``benchmarks/README.md`` for what is measured and how to read it.

Three parts, each in its own Python process so that neither TensorFlow's
state nor the peak memory of one leaks into the other:

* **pipeline**: the ``daily-pipeline`` flow from price files to forecast
  tables as of the cut-off date (the backfill), then one new trading day for
  every ticker (the incremental day), then the same again with nothing new
  (the no-op rerun). Stage times come from Prefect's task runs.
* **tutorial**: the tutorial's loop, re-implemented faithfully: per ticker a
  ``MinMaxScaler(0, 1)``, windows of 10, ``LSTM(50)`` then ``Dense(1)``, adam
  and mse, 20 epochs, batch 32.
* Both are then scored on the same held-out days after the cut-off (one-step
  forecasts from the actual previous closes), as MASE against the naive
  forecast on the same points.
* **command days**: after the pipeline part, the trading days after its
  incremental day, each run as a user runs it, ``pricecast run`` in a new
  process (its start-up, Prefect's temporary server and its shutdown
  included), until the policy fine-tunes (at most ``--command-days`` days):
  the command's wall time, the training action, and the flow's stage times.

With ``--tutorial-sample N`` the tutorial's loop runs on N tickers spread
evenly over the universe (the same N every run), its time is extrapolated
linearly to every ticker, and the pipeline's MASE is given on every ticker
and on those N (like for like with the tutorial's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.trading_calendar import next_sessions

DEFAULT_JSON = Path(__file__).parent / "results" / "end_to_end.json"
FIRST_DAY = dt.date(2010, 1, 4)
#: At most this many trading days after the incremental day are run as commands,
#: stopping at the first the policy fine-tunes on.
COMMAND_DAYS = 5
FINETUNE = "finetune"
#: The summary line ``pricecast run`` prints for the model: ``v2 (finetune: ...)``.
MODEL_LINE = re.compile(r"^model:\s+v(?P<version>\d+) \((?P<action>\w+): (?P<rest>.*)$", re.M)
TUTORIAL = {"window": 10, "units": 50, "epochs": 20, "batch_size": 32}


# --------------------------------------------------------------------------- data


def synthetic_closes(tickers: int, days: int, seed: int) -> pd.DataFrame:
    """Geometric Brownian motion closes: one column per ticker, one row per NYSE session.

    Each ticker has its own drift (-5 % to +15 % a year) and volatility (15 %
    to 45 % a year), and a start price between 10 and 300.
    """
    rng = np.random.default_rng(seed)
    sessions = [FIRST_DAY, *next_sessions(FIRST_DAY, days - 1)]
    drift = rng.uniform(-0.05, 0.15, tickers) / 252
    vol = rng.uniform(0.15, 0.45, tickers) / np.sqrt(252)
    shocks = rng.standard_normal((days, tickers))
    steps = (drift - vol**2 / 2) + vol * shocks
    steps[0] = 0.0
    start = rng.uniform(10, 300, tickers)
    closes = start * np.exp(np.cumsum(steps, axis=0))
    names = [f"SYN{index:03d}" for index in range(tickers)]
    return pd.DataFrame(np.round(closes, 4), index=pd.Index(sessions, name="date"), columns=names)


def write_ticker_files(closes: pd.DataFrame, folder: Path) -> None:
    """One file per ticker in the tutorial's layout (``Date,Open,High,Low,Close,...``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for ticker in closes.columns:
        close = closes[ticker]
        frame = pd.DataFrame(
            {
                "Date": [day.isoformat() for day in closes.index],
                "Open": close.shift(1).fillna(close).round(4),
                "High": np.maximum(close, close.shift(1).fillna(close)).round(4),
                "Low": np.minimum(close, close.shift(1).fillna(close)).round(4),
                "Close": close,
                "Adj Close": close,
                "Volume": 1_000_000,
            }
        )
        frame.to_csv(folder / f"{ticker}.csv", index=False)


def write_day_file(closes: pd.DataFrame, day: dt.date, folder: Path) -> Path:
    """Every ticker's close of ``day`` in one long-layout file, as a daily feed drops it."""
    row = closes.loc[day]
    path = folder / f"closes-{day.isoformat()}.csv"
    pd.DataFrame({"ticker": row.index, "date": day.isoformat(), "close": row.to_numpy()}).to_csv(
        path, index=False
    )
    return path


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mib() -> float:
    """The largest peak resident memory of this process's waited-for children, in MiB.

    ``RUSAGE_CHILDREN`` covers children that have ended and been waited for (and
    their own waited-for descendants): the training's worker processes once
    their pool is shut down, not a child still running (Prefect's server). It is
    the largest single child's peak, not a sum.
    """
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _tree_rss_kib(root: int) -> int:
    """The resident memory of ``root`` and all its live descendants, in KiB (Linux ``/proc``)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in tree)


class TreeMemory:
    """Samples the summed resident memory of this process and its descendants on a thread.

    The sum counts pages shared between processes once per process, so it
    errs high; a process living less than ``interval`` seconds may be missed.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)

    def _run(self) -> None:
        root = os.getpid()
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, _tree_rss_kib(root))
            except OSError:  # no /proc: nothing sampled
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def sample_tickers(tickers: list[str], size: int) -> list[str]:
    """``size`` tickers spread evenly over ``tickers`` (the first always in), deterministic."""
    if size >= len(tickers):
        return list(tickers)
    return [tickers[(index * len(tickers)) // size] for index in range(size)]


def one_step_windows(
    closes: pd.DataFrame, ticker: str, test_days: list[dt.date], window: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``window`` actual closes before each test day, and the day's close."""
    series = closes[ticker].to_numpy()
    positions = closes.index.get_indexer(test_days)
    windows = np.stack([series[p - window : p] for p in positions])
    return windows, series[positions]


def mase_of(predictions: dict[str, np.ndarray], actual: dict[str, np.ndarray], last: dict) -> dict:
    """MASE per ticker (MAE over the naive forecast's MAE on the same points), and pooled."""
    per_ticker = {
        ticker: float(
            np.mean(np.abs(actual[ticker] - predictions[ticker]))
            / np.mean(np.abs(actual[ticker] - last[ticker]))
        )
        for ticker in sorted(predictions)
    }
    return mase_summary(per_ticker)


def mase_summary(per_ticker: dict[str, float]) -> dict:
    """Mean, median and worst of per-ticker MASEs (and the figures themselves)."""
    values = np.array(list(per_ticker.values()))
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "worst_ticker": max(per_ticker, key=per_ticker.get),
        "per_ticker": per_ticker,
    }


# --------------------------------------------------------------------------- pipeline part


def _task_seconds(flow_run_id: Any) -> dict[str, float]:
    """Seconds spent in each task of a flow run (and of its subflows), by task name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    seconds: dict[str, float] = {}
    with get_client(sync_client=True) as client:
        runs = [flow_run_id]
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        runs.extend(child.id for child in children)
        tasks: list[Any] = []
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)),
                limit=200,
                offset=len(tasks),
            )
            tasks.extend(page)
            if len(page) < 200:
                break
    for run in tasks:
        name = run.name.rsplit("-", 1)[0]
        seconds[name] = seconds.get(name, 0.0) + run.total_run_time.total_seconds()
    return seconds


def _timed_flow(flow: Any, **parameters: Any) -> dict[str, Any]:
    from flows.heartbeats import for_command_runs

    started = time.perf_counter()
    with for_command_runs():  # as `pricecast run` starts it (flows/heartbeats.py)
        state = flow(**parameters, return_state=True)
    seconds = time.perf_counter() - started
    summary = state.result()
    return {
        "seconds": seconds,
        "stages": _task_seconds(state.state_details.flow_run_id),
        "summary": summary.model_dump(mode="json"),
    }


def run_pipeline_part(work: Path, cut: dt.date, next_day: dt.date, test_days: list) -> dict:
    """Backfill, incremental day and no-op rerun through the flow; then score the champion."""
    os.environ["PRICECAST_HOME"] = str(work / "home")
    os.environ["PRICECAST_DATABASE_URL"] = f"sqlite:///{work / 'pricecast.db'}"
    from flows import use_prefect_defaults

    # Before Prefect is imported, as ``pricecast`` does: its temporary server then runs
    # without analytics (its heartbeat hit the new database and logged a traceback).
    use_prefect_defaults()
    from prefect import flow

    from flows.daily import daily_pipeline

    @flow(name="warm-up")
    def warm_up() -> None:
        """Start Prefect's API before any clock runs; both measured runs then share it."""

    warm_up()
    closes = pd.read_parquet(work / "closes.parquet")
    drop = work / "drop"
    common = {"sources": [str(drop)], "mode": "auto"}
    with TreeMemory() as tree:
        backfill = _timed_flow(daily_pipeline, as_of_date=cut, **common)
    backfill["peak_rss_mib"] = peak_rss_mib()
    backfill["children_peak_rss_mib"] = children_peak_rss_mib()
    backfill["tree_peak_rss_mib"] = tree.peak_mib
    scores = score_pipeline(work, closes, cut, test_days)
    write_day_file(closes, next_day, drop)
    with TreeMemory() as tree:
        incremental = _timed_flow(daily_pipeline, as_of_date=next_day, **common)
    incremental["tree_peak_rss_mib"] = tree.peak_mib
    noop = _timed_flow(daily_pipeline, as_of_date=next_day, **common)
    return {
        "backfill": backfill,
        "incremental": incremental,
        "noop": noop,
        "mase": scores,
        "peak_rss_mib": peak_rss_mib(),
        "children_peak_rss_mib": children_peak_rss_mib(),
    }


def score_pipeline(work: Path, closes: pd.DataFrame, cut: dt.date, test_days: list) -> dict:
    """MASE of the champion as of ``cut`` on the held-out days."""
    from pipeline.db.migrate import open_database
    from pipeline.db.models import champion_model
    from pipeline.model.predictor import load_predictor
    from pipeline.model.scale import ewma_volatility

    engine = open_database(os.environ["PRICECAST_DATABASE_URL"])
    with engine.connect() as conn:
        champion = champion_model(conn, cut)
        predictor = load_predictor(conn, champion)
    predictions, actual, last = {}, {}, {}
    for ticker in predictor.tickers:
        windows, actual[ticker] = one_step_windows(closes, ticker, test_days, predictor.window)
        volatility = None
        if predictor.distributional:
            series = closes[ticker].to_numpy()
            origins = closes.index.get_indexer(test_days) - 1
            volatility = ewma_volatility(series, origins)
        predictions[ticker] = predictor.predict_next([ticker] * len(windows), windows, volatility)
        last[ticker] = windows[:, -1]
    engine.dispose()
    return mase_of(predictions, actual, last)


# --------------------------------------------------------------------------- command days


def pricecast_command() -> list[str]:
    """How to run ``pricecast`` with this interpreter: its console script beside it."""
    script = Path(sys.executable).with_name("pricecast")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())"]


def _interval_seconds(value: str | None) -> float:
    """A Prefect run time as its SQLite database stores it (``1970-01-01 00:00:03.5``)."""
    if not value:
        return 0.0
    return (dt.datetime.fromisoformat(value) - dt.datetime(1970, 1, 1)).total_seconds()


def command_flow_times(prefect_db: Path) -> dict[str, Any]:
    """The newest ``daily-pipeline`` flow run's time and its tasks' (its subflows'
    included), read from Prefect's SQLite database once the command's temporary
    server has stopped (no API is left to ask). Empty if it cannot be read."""
    try:
        with sqlite3.connect(f"file:{prefect_db}?mode=ro", uri=True) as db:
            found = db.execute(
                "select flow_run.id, flow_run.total_run_time from flow_run "
                "join flow on flow.id = flow_run.flow_id "
                "where flow.name = 'daily-pipeline' and flow_run.parent_task_run_id is null "
                "order by flow_run.start_time desc limit 1"
            ).fetchone()
            if found is None:
                return {}
            runs, frontier = [found[0]], [found[0]]
            while frontier:  # subflows (fan-out) hang off a task run of their parent
                marks = ",".join("?" * len(frontier))
                frontier = [
                    row[0]
                    for row in db.execute(
                        "select id from flow_run where parent_task_run_id in "
                        f"(select id from task_run where flow_run_id in ({marks}))",
                        frontier,
                    )
                ]
                runs.extend(frontier)
            marks = ",".join("?" * len(runs))
            tasks = db.execute(
                f"select name, total_run_time from task_run where flow_run_id in ({marks})", runs
            ).fetchall()
    except sqlite3.Error:
        return {}
    stages: dict[str, float] = {}
    for name, run_time in tasks:
        key = name.rsplit("-", 1)[0]
        stages[key] = stages.get(key, 0.0) + _interval_seconds(run_time)
    return {"flow_seconds": _interval_seconds(found[1]), "stages": stages}


def run_command_day(work: Path, closes: pd.DataFrame, day: dt.date) -> dict[str, Any]:
    """``day``'s closes dropped as one file, then ``pricecast run -q --source <drop>
    --as-of <day>`` in a new process, timed from its start to its exit."""
    drop = work / "drop"
    write_day_file(closes, day, drop)
    env = {
        **os.environ,
        "PRICECAST_HOME": str(work / "home"),
        "PRICECAST_DATABASE_URL": f"sqlite:///{work / 'pricecast.db'}",
        "PREFECT_HOME": str(work / "prefect"),
    }
    env.pop("PREFECT_API_URL", None)  # a temporary server, as a user without one gets
    command = [*pricecast_command(), "run", "-q", "--source", str(drop), "--as-of", str(day)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
        )
    model = MODEL_LINE.search(done.stdout)
    result: dict[str, Any] = {
        "as_of": day.isoformat(),
        "seconds": seconds,
        "action": model["action"] if model else "?",
        "model_version": int(model["version"]) if model else None,
        "model_line": model.group(0) if model else "",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        **command_flow_times(work / "prefect" / "prefect.db"),
    }
    return result


def run_command_days(work: Path, days: list[dt.date], limit: int = COMMAND_DAYS) -> list[dict]:
    """The first ``limit`` of ``days`` run as commands, stopping after the first the
    policy fine-tunes on (so a fine-tune day is measured whenever one comes)."""
    closes = pd.read_parquet(work / "closes.parquet")
    results = []
    for day in days[:limit]:
        print(f"running `pricecast run` as of {day} ...", flush=True)
        results.append(run_command_day(work, closes, day))
        if results[-1]["action"] == FINETUNE:
            break
    return results


def command_day_target(tickers: int) -> float:
    """Issue 14's most seconds for an incremental day as a command, start-up included:
    30 at up to 1,000 tickers, 90 above (its target at 5,000)."""
    return 30.0 if tickers <= 1000 else 90.0


def command_report(days: list[dict], tickers: int = 1000) -> str:
    """The command days' table: wall time, action, where the time went (*outside*: the
    command's start-up and shutdown, Prefect's temporary server included), and the
    1-minute load average when the command started; the fine-tune day against the
    target for ``tickers`` (``command_day_target``)."""
    if not days:
        return ""
    lines = [
        "next trading days, each `pricecast run` in a new process (wall time, start-up included)",
        "",
        "as of      | action   | command s | flow s | outside s |  train | sequences | report"
        " | ingest | forecast | load",
        "-----------+----------+-----------+--------+-----------+--------+-----------+-------"
        "-+--------+----------+-----",
    ]
    for day in days:
        stages = day.get("stages", {})
        flow = day.get("flow_seconds", 0.0)
        lines.append(
            f"{day['as_of']} | {day['action']:<8} | {day['seconds']:9.1f} | {flow:6.1f} | "
            f"{day['seconds'] - flow:9.1f} | {stages.get('train', 0.0):6.2f} | "
            f"{stages.get('sequences', 0.0):9.2f} | {stages.get('report', 0.0):6.2f} | "
            f"{stages.get('ingest', 0.0):6.2f} | {stages.get('forecast', 0.0):8.2f} | "
            f"{day['load_average_before'][0]:4.1f}"
        )
    finetunes = [day for day in days if day["action"] == FINETUNE]
    if finetunes:
        lines.append(
            f"fine-tune day as a command: {finetunes[0]['seconds']:.1f} s "
            f"(target <= {command_day_target(tickers):.0f} s, start-up included)"
        )
    else:
        lines.append(f"no fine-tune in {len(days)} day(s): raise --command-days")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tutorial part


def run_tutorial_part(work: Path, cut: dt.date, test_days: list, sample: int = 0) -> dict:
    """The tutorial's loop on every ticker's closes up to ``cut``, then its one-step MASE.

    Faithful to the tutorial except in one respect that can only help it: the
    scaler is fitted on the training closes (up to the cut-off), not on all data.
    With ``sample``, only that many tickers, spread evenly (:func:`sample_tickers`).
    """
    from sklearn.preprocessing import MinMaxScaler

    from pipeline.model.network import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(42)
    closes = pd.read_parquet(work / "closes.parquet")
    window = TUTORIAL["window"]
    predictions, actual, last = {}, {}, {}
    tickers = list(closes.columns)
    if sample:
        tickers = sample_tickers(tickers, sample)
    fit_seconds, samples, started = 0.0, 0, time.perf_counter()
    ticker_seconds: list[float] = []
    for ticker in tickers:
        ticker_started = time.perf_counter()
        history = closes.loc[:cut, ticker].to_numpy().reshape(-1, 1)
        scaler = MinMaxScaler(feature_range=(0, 1))
        scaled = scaler.fit_transform(history)
        x = np.stack([scaled[i - window : i, 0] for i in range(window, len(scaled))])
        y = scaled[window:, 0]
        model = keras.Sequential(
            [
                keras.Input(shape=(window, 1)),
                keras.layers.LSTM(TUTORIAL["units"]),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="adam", loss="mean_squared_error")
        fit_started = time.perf_counter()
        model.fit(
            x[..., None],
            y,
            epochs=TUTORIAL["epochs"],
            batch_size=TUTORIAL["batch_size"],
            verbose=0,
        )
        fit_seconds += time.perf_counter() - fit_started
        samples += len(x) * TUTORIAL["epochs"]
        windows, actual[ticker] = one_step_windows(closes, ticker, test_days, window)
        scaled_windows = scaler.transform(windows.reshape(-1, 1)).reshape(windows.shape)
        predicted = model.predict(scaled_windows[..., None], verbose=0)
        predictions[ticker] = scaler.inverse_transform(predicted).reshape(-1)
        last[ticker] = windows[:, -1]
        keras.backend.clear_session()
        ticker_seconds.append(time.perf_counter() - ticker_started)
    result = {
        "seconds": time.perf_counter() - started,
        "fit_seconds": fit_seconds,
        "samples_per_second": samples / fit_seconds,
        "mase": mase_of(predictions, actual, last),
        "peak_rss_mib": peak_rss_mib(),
    }
    if sample:
        result["sample"] = {"size": len(tickers), "universe": closes.shape[1], "tickers": tickers}
        result["ticker_seconds"] = ticker_seconds
    return result


# --------------------------------------------------------------------------- driver


def _run_part(part: str, work: Path, args: argparse.Namespace) -> dict:
    out = work / f"{part}.json"
    command = [sys.executable, "-m", "benchmarks.end_to_end", "--part", part, "--work", str(work)]
    command += ["--tickers", str(args.tickers), "--years", str(args.years)]
    command += ["--test-days", str(args.test_days), "--seed", str(args.seed)]
    if args.tutorial_sample:
        command += ["--tutorial-sample", str(args.tutorial_sample)]
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.setdefault("PRICECAST_LOG_LEVEL", "WARNING")
    print(f"running the {part} part ...", flush=True)
    subprocess.run(command, check=True, env=env, cwd=Path(__file__).parent.parent)
    return json.loads(out.read_text())


def layout(args: argparse.Namespace) -> tuple[int, dt.date, dt.date, list[dt.date]]:
    """Days generated, the cut-off (backfill as-of), the incremental day and the test days."""
    days = args.years * 252 + args.test_days
    sessions = [FIRST_DAY, *next_sessions(FIRST_DAY, days - 1)]
    cut = sessions[-args.test_days - 1]
    test_days = sessions[-args.test_days :]
    return days, cut, test_days[0], test_days


def extrapolate_tutorial(tutorial: dict) -> None:
    """With a sample, the loop's measured seconds scaled linearly to every ticker (in place).

    ``seconds`` becomes the extrapolated figure (what the ratios use);
    ``measured_seconds`` keeps what the sample took.
    """
    sample = tutorial.get("sample")
    if not sample:
        return
    tutorial["measured_seconds"] = tutorial["seconds"]
    tutorial["seconds"] = tutorial["measured_seconds"] * sample["universe"] / sample["size"]
    tutorial["extrapolated_seconds"] = tutorial["seconds"]


def pipeline_mase_on_sample(pipeline: dict, tutorial: dict) -> dict | None:
    """The pipeline's MASE on the tutorial's sample of tickers (like for like), if sampled."""
    sample = tutorial.get("sample")
    if not sample:
        return None
    per_ticker = pipeline["mase"]["per_ticker"]
    return mase_summary({ticker: per_ticker[ticker] for ticker in sample["tickers"]})


def _stage_rows(result: dict) -> list[tuple[str, float]]:
    stages = result["stages"]
    return sorted(stages.items(), key=lambda item: -item[1])


def report(result: dict) -> str:
    """The printed tables; without ``tutorial`` in ``result`` (``--skip-tutorial``), the
    pipeline's alone (no ratio to the tutorial, no tutorial row)."""
    pipe, tut = result["pipeline"], result.get("tutorial")
    backfill, incremental, noop = pipe["backfill"], pipe["incremental"], pipe["noop"]
    sample = tut.get("sample") if tut else None
    tutorial_label = "tutorial loop"
    if sample:
        tutorial_label = f"tutorial loop ({sample['size']} of {sample['universe']}, extrapolated)"
    width = max(28, len(tutorial_label))  # the default table's layout without a sample
    rule = "-" * (width + 1) + "+---------+-------"
    lines = [
        f"{result['tickers']} tickers x {result['years']} years of synthetic closes "
        f"({result['rows']:,} rows), cut-off {result['cut_off']}, "
        f"{result['test_days']} held-out days",
        "",
        f"{'run':<{width}} | seconds | ratio",
        rule,
    ]
    if tut:
        lines += [
            f"{tutorial_label:<{width}} | {tut['seconds']:7.1f} |  1.00",
            f"{'pipeline backfill':<{width}} | {backfill['seconds']:7.1f} | "
            f"{backfill['seconds'] / tut['seconds']:5.3f}  "
            f"({tut['seconds'] / backfill['seconds']:.1f}x faster; target >= 10x)",
        ]
    else:
        lines.append(
            f"{'pipeline backfill':<{width}} | {backfill['seconds']:7.1f} |  1.00  "
            "(tutorial not run: --skip-tutorial)"
        )
    lines += [
        f"{'incremental day':<{width}} | {incremental['seconds']:7.1f} | "
        f"{incremental['seconds'] / backfill['seconds']:5.3f}  of the backfill (target <= 0.10)",
        f"{'no-op rerun':<{width}} | {noop['seconds']:7.1f} | "
        f"{noop['seconds'] / backfill['seconds']:5.3f}  of the backfill (target <= 0.03)",
        "",
        "stage (task)                 | backfill | incremental | no-op",
        "-----------------------------+----------+-------------+------",
    ]
    for name, seconds in _stage_rows(backfill):
        lines.append(
            f"{name:<28} | {seconds:8.2f} | {incremental['stages'].get(name, 0.0):11.2f} | "
            f"{noop['stages'].get(name, 0.0):5.2f}"
        )
    if sample:
        lines.insert(
            5,
            f"{'  measured on the sample':<{width}} | {tut['measured_seconds']:7.1f} |"
            f"  ({tut['measured_seconds'] / sample['size']:.2f} s a ticker)",
        )
    model = backfill["summary"]["model"]
    lines += [
        "",
        "training                     | samples/s | peak RSS MiB | MASE mean | median |   max",
        "-----------------------------+-----------+--------------+-----------+--------+------",
        f"pipeline ({model['action']}, {model.get('epochs_run', '?')} epochs)".ljust(29)
        + f"| {model['samples_per_second'] or 0:9,.0f} | {backfill['peak_rss_mib']:12.0f} | "
        f"{pipe['mase']['mean']:9.4f} | {pipe['mase']['median']:6.4f} | "
        f"{pipe['mase']['max']:5.3f}",
    ]
    if tut:
        lines.append(
            "tutorial (20 epochs, batch 32)".ljust(29)
            + f"| {tut['samples_per_second']:9,.0f} | {tut['peak_rss_mib']:12.0f} | "
            f"{tut['mase']['mean']:9.4f} | {tut['mase']['median']:6.4f} | "
            f"{tut['mase']['max']:5.3f}"
        )
    if sample:
        on_sample = pipe["mase_on_sample"]
        lines[-1] = f"tutorial, {sample['size']} tickers".ljust(29) + lines[-1][30:]
        lines.insert(
            -1,
            f"pipeline, same {sample['size']} tickers".ljust(29)
            + f"| {'':>9} | {'':>12} | {on_sample['mean']:9.4f} | "
            f"{on_sample['median']:6.4f} | {on_sample['max']:5.3f}",
        )
    if "tree_peak_rss_mib" in backfill:
        lines += [
            "",
            "pipeline peak RSS MiB        | backfill | whole part",
            "-----------------------------+----------+-----------",
            f"{'flow process (RUSAGE_SELF)':<28} | {backfill['peak_rss_mib']:8.0f} | "
            f"{pipe['peak_rss_mib']:10.0f}",
            f"{'largest ended child':<28} | {backfill['children_peak_rss_mib']:8.0f} | "
            f"{pipe['children_peak_rss_mib']:10.0f}",
            f"{'process tree, sampled sum':<28} | {backfill['tree_peak_rss_mib']:8.0f} | "
            f"{max(backfill['tree_peak_rss_mib'], incremental['tree_peak_rss_mib']):10.0f}",
        ]
    return "\n".join(lines)


def rerun_command_days(args: argparse.Namespace, test_days: list[dt.date]) -> None:
    """The command days again on the state a run kept in ``args.work`` (its backfill and
    incremental day done, no command day yet: a copy restored to the same path), so a
    change to the daily run is measured without the backfill; ``args.json``, when it
    holds that run's result, gets the new table in place of its ``command_days``."""
    if args.work is None or not (args.work / "closes.parquet").exists():
        raise SystemExit("--command-days-only needs --work: the folder of a kept run")
    days = run_command_days(args.work, test_days[1:], args.command_days)
    print(command_report(days, args.tickers))
    result = json.loads(args.json.read_text()) if args.json.exists() else {}
    result["command_days"] = days
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten: {args.json}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--test-days", type=int, default=60, help="held-out days after the cut")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--part", choices=["pipeline", "tutorial"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--command-days",
        type=int,
        default=COMMAND_DAYS,
        metavar="N",
        help="after the pipeline part, run at most N next trading days as `pricecast run` "
        "commands, stopping at the first fine-tune (0: none)",
    )
    parser.add_argument(
        "--command-days-only",
        action="store_true",
        help="only the command days, on the state a run left in --work (restore a copy of "
        "it to measure again); their table replaces `command_days` in --json",
    )
    parser.add_argument(
        "--skip-tutorial", action="store_true", help="time the pipeline only (no ratio)"
    )
    parser.add_argument(
        "--tutorial-sample",
        type=int,
        default=0,
        metavar="N",
        help="run the tutorial's loop on N tickers spread evenly, extrapolate its time",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    days, cut, next_day, test_days = layout(args)

    if args.part == "pipeline":
        result = run_pipeline_part(args.work, cut, next_day, test_days)
        (args.work / "pipeline.json").write_text(json.dumps(result, default=str))
        return
    if args.part == "tutorial":
        result = run_tutorial_part(args.work, cut, test_days, args.tutorial_sample)
        (args.work / "tutorial.json").write_text(json.dumps(result, default=str))
        return

    if args.command_days_only:
        rerun_command_days(args, test_days)
        return

    with tempfile.TemporaryDirectory(prefix="pricecast-bench-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        closes = synthetic_closes(args.tickers, days, args.seed)
        closes.to_parquet(work / "closes.parquet")
        write_ticker_files(closes.loc[:cut], work / "drop")
        result: dict[str, Any] = {
            "tickers": args.tickers,
            "years": args.years,
            "rows": int(closes.loc[:cut].size),
            "cut_off": cut.isoformat(),
            "test_days": args.test_days,
            "seed": args.seed,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average_before": os.getloadavg(),
            },
            "pipeline": _run_part("pipeline", work, args),
        }
        result["command_days"] = run_command_days(work, test_days[1:], args.command_days)
        if not args.skip_tutorial:
            result["tutorial"] = _run_part("tutorial", work, args)
        result["machine"]["load_average_after"] = os.getloadavg()
    pipe = result["pipeline"]
    result["ratios"] = {
        "incremental_over_backfill": pipe["incremental"]["seconds"] / pipe["backfill"]["seconds"],
        "noop_over_backfill": pipe["noop"]["seconds"] / pipe["backfill"]["seconds"],
    }
    tut = result.get("tutorial")
    if tut is not None:
        extrapolate_tutorial(tut)
        on_sample = pipeline_mase_on_sample(pipe, tut)
        if on_sample is not None:
            pipe["mase_on_sample"] = on_sample
            result["ratios"]["mase_pipeline_over_tutorial_on_sample"] = (
                on_sample["mean"] / tut["mase"]["mean"]
            )
        result["ratios"]["speedup_over_tutorial"] = tut["seconds"] / pipe["backfill"]["seconds"]
        result["ratios"]["mase_pipeline_over_tutorial"] = pipe["mase"]["mean"] / tut["mase"]["mean"]
    print(report(result))
    if result["command_days"]:
        print()
        print(command_report(result["command_days"], args.tickers))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
