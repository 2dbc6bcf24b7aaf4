"""The ``backtest`` flow: walk-forward backtest of LSTM variants against the baselines."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.daily import build_settings
from flows.tasks import backtest_task, latest_price_date_task, prepare_database
from pipeline.errors import MissingDataError
from pipeline.evaluate.backtest import BacktestConfig


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
    database_url: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
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
        database_url: default ``PRICECAST_DATABASE_URL``.
        overrides: other settings, e.g. ``{"epochs": 5}``.
    """
    logger = get_run_logger()
    settings = build_settings(database_url, None, None, tickers, None, overrides)
    url = settings.resolved_database_url
    prepare_database(url)
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
    result = backtest_task(url, as_of, settings.tickers, variants or ["default"], config, settings)
    for row in result["table"]:
        logger.info(
            "%s h=%d: MASE %.4f mean, %.4f worst (%s), coverage %s",
            row["model"],
            row["horizon"],
            row["mase_mean"],
            row["mase_max"],
            row["worst_ticker"],
            "-" if row["coverage"] != row["coverage"] else f"{row['coverage']:.3f}",
        )
    if json_path:
        Path(json_path).write_text(json.dumps(result["records"], indent=1))
    return result
