"""The ``backtest`` flow: walk-forward backtest of LSTM variants against the baselines."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows import show_library_logs
from flows.daily import build_settings
from flows.heartbeats import without_heartbeats
from flows.runners import backtest_units, fan_out_for
from flows.tasks import (
    backtest_plan_task,
    backtest_task,
    latest_price_date_task,
    prepare_database,
    store_backtest_task,
)
from pipeline.errors import ConfigurationError, MissingDataError
from pipeline.evaluate.plan import BacktestConfig
from pipeline.evaluate.variants import variants as build_variants
from pipeline.files import write_text
from pipeline.results import BacktestResult


@flow(name="backtest", log_prints=False)
def backtest_flow(
    as_of_date: dt.date | None = None,
    tickers: list[str] | None = None,
    folds: int = 5,
    horizon: int = 1,
    test_fraction: float = 0.2,
    origins: str = "expanding",
    variants: list[str] | None = None,
    json_path: str | None = None,
    points_path: str | None = None,
    database_url: str | None = None,
    overrides: dict[str, Any] | None = None,
    dask_address: str | None = None,
) -> BacktestResult:
    """Backtest on the stored prices up to ``as_of_date`` (default: the newest).

    Args:
        as_of_date: the last date of data used.
        tickers: default ``PRICECAST_TICKERS``, else every active ticker.
        folds: test folds per ticker.
        horizon: steps forecast from each origin.
        test_fraction: share of each series in the test folds.
        origins: ``expanding`` or ``rolling`` training spans.
        variants: LSTM variants (``pipeline.evaluate.variants``); default ``["default"]``.
        json_path: where to write one record per model, ticker and horizon step.
        points_path: where to write every forecast point (CSV, or Parquet for a
            ``.parquet`` path), from the task that merges the points.
        database_url: default ``PRICECAST_DATABASE_URL``.
        overrides: other settings, e.g. ``{"epochs": 5}``.
        dask_address: a Dask scheduler to run the units (a fold of the baselines or of
            one variant) on; default ``PRICECAST_DASK_ADDRESS``, else local threads
            (``PRICECAST_WORKERS``; with one, the whole backtest is one task).
    """
    show_library_logs()
    logger = get_run_logger()
    settings = build_settings(database_url, None, None, tickers, None, overrides, dask_address)
    url = settings.resolved_database_url
    prepare_database(url)
    fan = fan_out_for(settings)
    as_of = as_of_date or latest_price_date_task(url, settings.tickers)
    if as_of is None:
        raise MissingDataError("the database holds no prices to backtest")
    config = BacktestConfig(
        folds=folds,
        horizon=horizon,
        test_fraction=test_fraction,
        origins=origins,
        interval_level=settings.interval_level,
    )
    names = variants or ["default"]
    if fan.parallel:
        try:
            chosen = build_variants(names, settings.sequence_config(), settings.training_config())
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        units = backtest_plan_task(url, as_of, settings.tickers, chosen, config)
        logger.info("%d backtest units: %s", len(units), fan.describe())
        with without_heartbeats():  # this run's heartbeat covers its subflow
            parts = backtest_units.with_options(task_runner=fan.task_runner())(
                url,
                as_of,
                settings.tickers,
                chosen,
                config,
                [(fold, variant) for fold, variant, _ in units],
                [label for _, _, label in units],
            )
        result = store_backtest_task(
            url, as_of, settings.tickers, chosen, config, parts, points_path
        )
    else:
        result = backtest_task(url, as_of, settings.tickers, names, config, settings, points_path)
    for row in result.table:
        logger.info(
            "%s h=%d: MASE %.4f mean, %.4f worst (%s), coverage %s, MSIS %s",
            row["model"],
            row["horizon"],
            row["mase_mean"],
            row["mase_max"],
            row["worst_ticker"],
            "-" if row["coverage"] != row["coverage"] else f"{row['coverage']:.3f}",
            "-" if row["msis"] != row["msis"] else f"{row['msis']:.3f}",
        )
    if json_path:
        write_text(Path(json_path), json.dumps(result.records, indent=1), "backtest")
    return result
