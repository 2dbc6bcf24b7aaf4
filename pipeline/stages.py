"""The stages of a run as plain functions of plain values: a database URL, a folder, dates.

Each function opens the database from its URL (one engine per URL and
process), calls one stage of the library in its own transaction and returns
plain values (a stage's typed result from ``pipeline.results``, dates, paths),
never engines or models. That is what lets an orchestrator run it anywhere:
``flows.tasks`` wraps each one as a Prefect task, unchanged, and may run it in
another process or on another machine of a Dask cluster; ``pipeline.run``
strings them together into the daily run; tests call them directly, without
Prefect.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Connection, Engine

from pipeline.db.engine import sqlite_path
from pipeline.db.forecasts import read_forecasts
from pipeline.db.migrate import current_revision, open_database
from pipeline.db.prices import latest_trade_date, tickers_with_prices
from pipeline.db.runs import completed_run, record_run, run_inputs
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import MissingDataError
from pipeline.evaluate.backtest import merge_units, run_unit
from pipeline.evaluate.plan import BacktestConfig, BacktestUnit
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
from pipeline.model.fit import NetworkJob, NetworkOutcome, fit_network
from pipeline.model.forecast import forecast
from pipeline.model.train import TrainingPlan, finish_training, plan_training, train
from pipeline.report import report_path, write_report
from pipeline.results import (
    BacktestResult,
    BacktestSummary,
    ForecastSummary,
    Freshness,
    IngestSummary,
    ModelSummary,
    RetentionSummary,
    RunSummary,
    SequencesSummary,
)
from pipeline.retention import collect
from pipeline.sequences.build import build_sequences
from pipeline.sequences.config import SequenceConfig
from pipeline.settings import Settings

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def database(url: str) -> Engine:
    """One engine per database URL and process, with the schema in place."""
    return open_database(url)


@contextlib.contextmanager
def shard_transaction(database_url: str) -> Iterator[Connection]:
    """The transaction of one shard, which may run beside other shards.

    SQLite has one writer at a time, and a transaction that read before
    another one wrote fails instead of waiting for it; so shards on one
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


def prepare_database(database_url: str) -> str:
    """Connect and create or upgrade the schema; returns the schema revision."""
    with database(database_url).connect() as conn:
        return current_revision(conn) or ""


def ingest_sources(
    database_url: str,
    sources: list[str],
    as_of: dt.date | None,
    tickers: list[str] | None,
    settings: Settings,
    run_id: str,
) -> IngestSummary:
    """Ingest every source: valid rows into ``prices``, the rest into the quarantine.
    With no source, nothing (an empty report)."""
    built = build_sources(sources, http_options=settings.http_options()) if sources else []
    with database(database_url).begin() as conn:
        report = ingest(
            conn,
            built,
            as_of=as_of,
            tickers=tickers,
            run_id=run_id,
            jump_threshold=settings.jump_threshold,
            max_price=settings.max_price,
            max_input_bytes=settings.max_input_bytes,
            exchange=settings.exchange,
        )
    return report.summary()


def latest_price_date(database_url: str, tickers: list[str] | None) -> dt.date | None:
    """The newest trade date in ``prices`` among ``tickers``."""
    with database(database_url).connect() as conn:
        return latest_trade_date(conn, tickers)


def freshness(database_url: str, as_of: dt.date, tickers: list[str] | None) -> Freshness:
    """The tickers to process (``tickers``, else every active one), and which of them
    lack the last trading day's close."""
    with database(database_url).connect() as conn:
        if tickers is None:
            inactive = inactive_tickers(conn)
            tickers = [ticker for ticker in tickers_with_prices(conn) if ticker not in inactive]
        stale = stale_tickers(conn, as_of, tickers)
    return Freshness(tickers=list(tickers), stale=stale)


def sequences(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    config: SequenceConfig,
) -> SequencesSummary:
    """Build the scaled windows of each ticker as of ``as_of``, and keep them for the
    train stage that follows in this process (``pipeline.sequences.handoff``)."""
    with database(database_url).begin() as conn:
        return build_sequences(conn, Path(home), as_of, tickers, config, hand_off=True).summary()


def sequences_shard(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str],
    config: SequenceConfig,
) -> SequencesSummary:
    """``sequences`` for one shard of tickers; a shard none of whose tickers has a
    price reports them skipped (the merged summary fails when no shard built any).
    Nothing is kept for the train stage: a shard may run in another process (a Dask
    worker) that never trains, and each shard's build would drop the one before."""
    try:
        with shard_transaction(database_url) as conn:
            return build_sequences(conn, Path(home), as_of, tickers, config).summary()
    except MissingDataError:
        with database(database_url).connect() as conn:
            inactive = inactive_tickers(conn)
        return SequencesSummary(
            as_of=as_of,
            tickers=[],
            train_windows=0,
            validation_windows=0,
            skipped={
                ticker: "inactive; `pricecast tickers add` reactivates it"
                if ticker in inactive
                else f"no prices on or before {as_of}"
                for ticker in tickers
            },
        )


def train_model(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    mode: str,
    sequence_config: SequenceConfig,
    model_config: ModelConfig,
    workers: int = 1,
) -> ModelSummary:
    """Retrain, fine-tune or reuse the model; returns the version to forecast with.
    ``workers``: processes to fit in (``train``'s; 0: this process)."""
    with database(database_url).begin() as conn:
        return train(
            conn, Path(home), as_of, tickers, mode, sequence_config, model_config, workers=workers
        )


def train_plan(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    mode: str,
    sequence_config: SequenceConfig,
    model_config: ModelConfig,
) -> TrainingPlan:
    """The train stage's first step (``plan_training``): the decision, and the fit jobs
    if there is anything to fit, each carrying its data (they run anywhere)."""
    with database(database_url).begin() as conn:
        return plan_training(conn, Path(home), as_of, tickers, mode, sequence_config, model_config)


def fit_job(job: NetworkJob) -> NetworkOutcome:
    """Fit one network of a training plan (``fit.fit_network``): no database, no shared
    disk; the network file's bytes come back in the outcome."""
    return fit_network(job)


def train_finish(
    database_url: str,
    home: str,
    plan: TrainingPlan,
    outcomes: list[NetworkOutcome],
) -> ModelSummary:
    """The train stage's last step (``finish_training``): the fitted networks saved as
    the next version, judged, gated, published and registered."""
    with database(database_url).begin() as conn:
        return finish_training(conn, Path(home), plan, outcomes)


def forecast_prices(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    horizon: int,
    model_version: int,
) -> ForecastSummary:
    """Write the next ``horizon`` trading days' forecasts."""
    with database(database_url).begin() as conn:
        return forecast(conn, as_of, tickers, horizon, model_version).summary()


def forecast_shard(
    database_url: str,
    as_of: dt.date,
    tickers: list[str],
    horizon: int,
    model_version: int,
) -> ForecastSummary:
    """``forecast_prices`` for one shard of tickers."""
    with shard_transaction(database_url) as conn:
        return forecast(conn, as_of, tickers, horizon, model_version).summary()


def forecast_rows(database_url: str, as_of: dt.date, model_version: int) -> list[dict]:
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


def backtest_summary(database_url: str) -> BacktestSummary | None:
    """The newest stored backtest's one-step MASE per model, if any."""
    with database(database_url).connect() as conn:
        return latest_backtest_summary(conn)


def retention(
    database_url: str,
    home: str,
    as_of: dt.date,
    keep_unpromoted: int,
    keep_days: int,
    now: dt.datetime,
) -> RetentionSummary:
    """Delete the model files and reports the retention policy no longer keeps."""
    with database(database_url).begin() as conn:
        return collect(
            conn,
            Path(home),
            as_of,
            keep_unpromoted=keep_unpromoted,
            keep_days=keep_days,
            now=now,
        ).summary()


def report(database_url: str, home: str, as_of: dt.date) -> str:
    """Write the HTML report as of ``as_of``; returns its path."""
    with database(database_url).connect() as conn:
        return str(write_report(conn, report_path(Path(home), as_of), as_of))


def unchanged_run(database_url: str, key: str, as_of: dt.date) -> RunSummary | None:
    """The summary of the completed run with this key, if nothing it depends on changed.

    A stored summary that is not a ``RunSummary`` (one an older pricecast wrote in
    another shape) counts as no completed run: the run runs every stage, and stores
    its own.
    """
    with database(database_url).connect() as conn:
        stored = completed_run(conn, key, run_inputs(conn, as_of))
    if stored is None:
        return None
    try:
        return RunSummary.model_validate(stored)
    except ValidationError as exc:
        logger.warning(
            "the stored summary of the completed run as of %s does not read as a run "
            "summary (%d problems, first: %s); running every stage again",
            as_of,
            exc.error_count(),
            exc.errors()[0]["msg"],
        )
        return None


def record_completed_run(
    database_url: str, key: str, flow_name: str, as_of: dt.date, summary: RunSummary
) -> None:
    """Record a completed run, so that a rerun with nothing new returns at once."""
    with database(database_url).begin() as conn:
        record_run(conn, key, flow_name, as_of, summary.model_dump(mode="json"))


def backtest_units_plan(
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


def backtest_unit(
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
    with database(database_url).connect() as conn:
        plan = backtest_plan(conn, as_of, chosen, config, tickers)
    return run_unit(plan, BacktestUnit(fold, variant), chosen)


def store_backtest_units(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    chosen: list[Variant],
    config: BacktestConfig,
    parts: list[list[Any]],
    points_path: str | None = None,
) -> BacktestResult:
    """Merge the units' points into the backtest's metrics and store them (and write
    the points to ``points_path``, if given)."""
    with database(database_url).begin() as conn:
        series = backtest_series(conn, as_of, chosen, tickers)
        run = store_backtest(
            conn, as_of, series, chosen, config, merge_units(parts, chosen, config.interval_level)
        )
    return _backtest_summary(run, points_path)


def backtest(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    variant_names: list[str],
    config: BacktestConfig,
    settings: Settings,
    points_path: str | None = None,
) -> BacktestResult:
    """Walk-forward backtest of the variants and baselines; metrics into the database
    (and every forecast point to ``points_path``, if given)."""
    chosen = variants(variant_names, settings.sequence_config(), settings.training_config())
    with database(database_url).begin() as conn:
        run = run_backtest(conn, as_of, chosen, config, tickers)
    return _backtest_summary(run, points_path)


def _backtest_summary(run: Any, points_path: str | None) -> BacktestResult:
    if points_path:
        run.result.write_points(Path(points_path))
    return BacktestResult(
        run_id=run.run_id,
        as_of=run.as_of,
        table=run.result.table().to_dict("records"),
        records=run.result.records(),
    )
