"""One Prefect task per stage; each opens the database and calls one ``pipeline`` function.

Tasks take and return plain values (URLs, paths, dates, dictionaries), never
engines or models: Prefect may pickle what a task returns. Retries are for
database I/O only: an error of the pipeline's own (bad input, missing data)
fails at once, since retrying would fail the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sqlalchemy.engine import Connection, Engine

from flows import show_library_logs
from pipeline.db.engine import sqlite_path
from pipeline.db.forecasts import read_forecasts
from pipeline.db.migrate import current_revision, open_database
from pipeline.db.prices import latest_trade_date, list_tickers
from pipeline.db.runs import completed_run, record_run, run_inputs
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import MissingDataError, PricecastError
from pipeline.evaluate.backtest import BacktestConfig, BacktestUnit, merge_units, run_unit
from pipeline.evaluate.stage import (
    backtest_plan,
    backtest_series,
    latest_backtest_summary,
    run_backtest,
    store_backtest,
)
from pipeline.evaluate.variants import Variant, variants
from pipeline.freshness import stale_tickers
from pipeline.ingest.load import ingest
from pipeline.ingest.sources import build_sources
from pipeline.model.config import ModelConfig
from pipeline.model.forecast import forecast
from pipeline.model.train import train
from pipeline.report import report_path, write_report
from pipeline.retention import collect
from pipeline.sequences.build import build_sequences
from pipeline.sequences.config import SequenceConfig
from pipeline.settings import Settings

IO_RETRIES = 3
IO_RETRY_DELAYS = [2, 5, 15]


def retry_on_io_errors(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry unless the failure is one of the pipeline's own, deterministic errors,
    or the task ran out of time (a retry would wait as long again)."""
    try:
        state.result()
    except (PricecastError, TimeoutError):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient I/O
        return True
    return False


@lru_cache(maxsize=8)
def database(url: str) -> Engine:
    """One engine per database URL and process, with the schema in place."""
    return open_database(url)


@contextlib.contextmanager
def shard_transaction(database_url: str) -> Iterator[Connection]:
    """The transaction of one shard task, which may run beside other shards.

    SQLite has one writer at a time, and a transaction that read before
    another one wrote fails instead of waiting for it; so shard tasks on one
    SQLite file take turns, through an exclusive lock on ``<file>.shards.lock``
    (processes of one machine; SQLite is no database for several). Other
    databases run them at once.
    """
    path = sqlite_path(database_url)
    with contextlib.ExitStack() as stack:
        if path is not None:
            handle = stack.enter_context(path.with_name(f"{path.name}.shards.lock").open("a"))
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield stack.enter_context(database(database_url).begin())


_IO = {
    "retries": IO_RETRIES,
    "retry_delay_seconds": IO_RETRY_DELAYS,
    "retry_condition_fn": retry_on_io_errors,
    "cache_policy": NO_CACHE,
}


@task(name="prepare-database", timeout_seconds=300, **_IO)
def prepare_database(database_url: str) -> str:
    """Connect and create or upgrade the schema; returns the schema revision."""
    engine = database(database_url)
    with engine.connect() as conn:
        return current_revision(conn) or ""


@task(name="ingest", timeout_seconds=3600, **_IO)
def ingest_task(
    database_url: str,
    sources: list[str],
    as_of: dt.date | None,
    tickers: list[str] | None,
    settings: Settings,
) -> dict[str, Any]:
    """Ingest every source: valid rows into ``prices``, the rest into the quarantine.
    With no source, nothing (an empty report)."""
    built = build_sources(sources, http_options=settings.http_options()) if sources else []
    with database(database_url).begin() as conn:
        report = ingest(
            conn,
            built,
            as_of=as_of,
            tickers=tickers,
            run_id=str(flow_run.id or uuid.uuid4().hex),
            jump_threshold=settings.jump_threshold,
            exchange=settings.exchange,
        )
    return report.summary()


@task(name="latest-price-date", timeout_seconds=300, **_IO)
def latest_price_date_task(database_url: str, tickers: list[str] | None) -> dt.date | None:
    """The newest trade date in ``prices`` among ``tickers``."""
    with database(database_url).connect() as conn:
        return latest_trade_date(conn, tickers)


@task(name="sequences", timeout_seconds=3600, **_IO)
def sequences_task(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    config: SequenceConfig,
) -> dict[str, Any]:
    """Build the scaled windows of each ticker as of ``as_of``."""
    with database(database_url).begin() as conn:
        return build_sequences(conn, Path(home), as_of, tickers, config).summary()


@task(name="train", timeout_seconds=6 * 3600, cache_policy=NO_CACHE)
def train_task(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    mode: str,
    sequence_config: SequenceConfig,
    model_config: ModelConfig,
) -> dict[str, Any]:
    """Retrain, fine-tune or reuse the model; returns the version to forecast with."""
    with database(database_url).begin() as conn:
        return train(
            conn, Path(home), as_of, tickers, mode, sequence_config, model_config
        ).summary()


@task(name="forecast", timeout_seconds=3600, **_IO)
def forecast_task(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    horizon: int,
    model_version: int,
) -> dict[str, Any]:
    """Write the next ``horizon`` trading days' forecasts."""
    with database(database_url).begin() as conn:
        return forecast(conn, as_of, tickers, horizon, model_version).summary()


@task(name="sequences-shard", timeout_seconds=3600, **_IO)
def sequences_shard_task(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str],
    config: SequenceConfig,
) -> dict[str, Any]:
    """``sequences_task`` for one shard of tickers; a shard none of whose tickers has a
    price reports them skipped (the merged summary fails when no shard built any)."""
    show_library_logs()  # on a Dask worker, no flow ran in this process
    try:
        with shard_transaction(database_url) as conn:
            return build_sequences(conn, Path(home), as_of, tickers, config).summary()
    except MissingDataError:
        with database(database_url).connect() as conn:
            inactive = inactive_tickers(conn)
        return {
            "as_of": as_of.isoformat(),
            "tickers": [],
            "train_windows": 0,
            "validation_windows": 0,
            "skipped": {
                ticker: "inactive; `pricecast tickers add` reactivates it"
                if ticker in inactive
                else f"no prices on or before {as_of}"
                for ticker in tickers
            },
        }


@task(name="forecast-shard", timeout_seconds=3600, **_IO)
def forecast_shard_task(
    database_url: str,
    as_of: dt.date,
    tickers: list[str],
    horizon: int,
    model_version: int,
) -> dict[str, Any]:
    """``forecast_task`` for one shard of tickers."""
    show_library_logs()  # on a Dask worker, no flow ran in this process
    with shard_transaction(database_url) as conn:
        return forecast(conn, as_of, tickers, horizon, model_version).summary()


@task(name="backtest-plan", timeout_seconds=900, **_IO)
def backtest_plan_task(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    chosen: list[Variant],
    config: BacktestConfig,
) -> list[tuple[int, int | None, str]]:
    """The units of a backtest: ``(fold, variant, label)``, in merge order."""
    with database(database_url).connect() as conn:
        plan = backtest_plan(conn, as_of, chosen, config, tickers)
    return [(unit.fold, unit.variant, unit.describe(chosen)) for unit in plan.units(chosen)]


@task(name="backtest-unit", timeout_seconds=12 * 3600, cache_policy=NO_CACHE)
def backtest_unit_task(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    chosen: list[Variant],
    config: BacktestConfig,
    fold: int,
    variant: int | None,
) -> list[Any]:
    """The forecast points (data frames) of one backtest unit: one fold of the baselines
    or of one variant, trained from scratch on the stored prices."""
    show_library_logs()  # on a Dask worker, no flow ran in this process
    with database(database_url).connect() as conn:
        plan = backtest_plan(conn, as_of, chosen, config, tickers)
    return run_unit(plan, BacktestUnit(fold, variant), chosen)


@task(name="store-backtest", timeout_seconds=3600, **_IO)
def store_backtest_task(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    chosen: list[Variant],
    config: BacktestConfig,
    parts: list[list[Any]],
    points_path: str | None = None,
) -> dict[str, Any]:
    """Merge the units' points into the backtest's metrics and store them (and write
    the points to ``points_path``, if given)."""
    with database(database_url).begin() as conn:
        series = backtest_series(conn, as_of, chosen, tickers)
        run = store_backtest(
            conn, as_of, series, chosen, config, merge_units(parts, chosen, config.interval_level)
        )
    return _backtest_summary(run, points_path)


def _backtest_summary(run: Any, points_path: str | None) -> dict[str, Any]:
    if points_path:
        run.result.write_points(Path(points_path))
    return {
        "run_id": run.run_id,
        "as_of": run.as_of.isoformat(),
        "table": run.result.table().to_dict("records"),
        "records": run.result.records(),
    }


@task(name="backtest", timeout_seconds=12 * 3600, cache_policy=NO_CACHE)
def backtest_task(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    variant_names: list[str],
    config: BacktestConfig,
    settings: Settings,
    points_path: str | None = None,
) -> dict[str, Any]:
    """Walk-forward backtest of the variants and baselines; metrics into the database
    (and every forecast point to ``points_path``, if given)."""
    chosen = variants(variant_names, settings.sequence_config(), settings.training_config())
    with database(database_url).begin() as conn:
        run = run_backtest(conn, as_of, chosen, config, tickers)
    return _backtest_summary(run, points_path)


@task(name="freshness", timeout_seconds=300, **_IO)
def freshness_task(database_url: str, as_of: dt.date, tickers: list[str] | None) -> dict[str, Any]:
    """The tickers to process, and which of them lack the last trading day's close."""
    with database(database_url).connect() as conn:
        if tickers is None:
            inactive = inactive_tickers(conn)
            tickers = [ticker for ticker in list_tickers(conn) if ticker not in inactive]
        stale = stale_tickers(conn, as_of, tickers)
    return {"tickers": list(tickers), "stale": stale}


@task(name="published-forecasts", timeout_seconds=300, **_IO)
def forecast_rows_task(database_url: str, as_of: dt.date, model_version: int) -> list[dict]:
    """The forecasts written as of ``as_of`` by ``model_version``, JSON-ready."""
    with database(database_url).connect() as conn:
        frame = read_forecasts(conn, as_of)
    frame = frame[frame["model_version"] == model_version]
    return [
        {
            key: value.isoformat() if hasattr(value, "isoformat") else value
            for key, value in row.items()
        }
        for row in frame.to_dict("records")
    ]


@task(name="backtest-summary", timeout_seconds=300, **_IO)
def backtest_summary_task(database_url: str) -> dict[str, Any] | None:
    """The newest stored backtest's one-step MASE per model, if any."""
    with database(database_url).connect() as conn:
        return latest_backtest_summary(conn)


@task(name="retention", timeout_seconds=900, **_IO)
def retention_task(
    database_url: str, home: str, as_of: dt.date, keep_unpromoted: int, keep_days: int
) -> dict[str, Any]:
    """Delete the model files and reports the retention policy no longer keeps."""
    with database(database_url).begin() as conn:
        return collect(
            conn,
            Path(home),
            as_of,
            keep_unpromoted=keep_unpromoted,
            keep_days=keep_days,
            now=dt.datetime.now(dt.UTC),
        ).summary()


@task(name="report", timeout_seconds=900, **_IO)
def report_task(database_url: str, home: str, as_of: dt.date) -> str:
    """Write the HTML report as of ``as_of``; returns its path."""
    with database(database_url).connect() as conn:
        return str(write_report(conn, report_path(Path(home), as_of), as_of))


@task(name="unchanged-run", timeout_seconds=300, **_IO)
def unchanged_run_task(database_url: str, key: str, as_of: dt.date) -> dict[str, Any] | None:
    """The summary of the completed run with this key, if nothing it depends on changed."""
    with database(database_url).connect() as conn:
        return completed_run(conn, key, run_inputs(conn, as_of))


@task(name="record-run", timeout_seconds=300, **_IO)
def record_run_task(
    database_url: str, key: str, flow_name: str, as_of: dt.date, summary: dict[str, Any]
) -> None:
    """Record a completed run, so that a rerun with nothing new returns at once."""
    with database(database_url).begin() as conn:
        record_run(conn, key, flow_name, as_of, summary)
