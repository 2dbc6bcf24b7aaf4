"""The ``backfill`` flow: the daily pipeline for every trading day of a date range, in order.

Each trading day runs the ``daily-pipeline`` flow as a subflow with that day
as its as-of date, one after the other, so every day ingests, trains and
forecasts from exactly what the scheduled daily run would have seen that day,
and the next day starts from the champion the previous one left. The
backfilled forecasts are therefore the ones the daily runs would have written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger

from flows import show_library_logs
from flows.daily import build_settings, daily_pipeline
from flows.heartbeats import without_heartbeats
from pipeline.db.lock import pipeline_lock
from pipeline.results import BackfillDay, BackfillSummary
from pipeline.trading_calendar import trading_days


@flow(name="backfill", log_prints=False)
def backfill(
    start_date: dt.date,
    end_date: dt.date,
    tickers: list[str] | None = None,
    sources: list[str] | None = None,
    mode: str = "auto",
    horizon: int | None = None,
    database_url: str | None = None,
    home: str | None = None,
    overrides: dict[str, Any] | None = None,
    dask_address: str | None = None,
) -> BackfillSummary:
    """Run the daily pipeline as of every trading day from ``start_date`` to ``end_date``.

    Trading days are those of ``PRICECAST_EXCHANGE`` (XNYS by default). The
    days run in order, each as a ``daily-pipeline`` subflow with
    ``as_of_date`` set to that day; the first failure stops the backfill,
    since every later day builds on the models of the days before it.

    Args:
        start_date: the first as-of date (if it is not a trading day, the next one).
        end_date: the last as-of date (if it is not a trading day, the one before).
        tickers: as in ``daily-pipeline``.
        sources: as in ``daily-pipeline``.
        mode: as in ``daily-pipeline``, for every day.
        horizon: as in ``daily-pipeline``.
        database_url: as in ``daily-pipeline``.
        home: as in ``daily-pipeline``.
        overrides: as in ``daily-pipeline``.
        dask_address: as in ``daily-pipeline``: where every day's per-shard work runs.

    Returns:
        The range, the trading days run, and per day its as-of date, model
        version and action, champion and forecasts written
        (``model_dump(mode="json")`` gives the dictionary this flow returned
        before it was typed, key for key).
    """
    show_library_logs()
    logger = get_run_logger()
    settings = build_settings(database_url, home, sources, tickers, horizon, overrides)
    days = trading_days(start_date, end_date, settings.exchange)
    logger.info(
        "backfill %s to %s: %d %s trading days%s",
        start_date,
        end_date,
        len(days),
        settings.exchange,
        f" ({days[0]} to {days[-1]})" if days else "",
    )
    # Held across the days; the daily runs inside take it again without waiting.
    with pipeline_lock(settings.resolved_database_url, settings.lock_wait_seconds):
        runs = []
        for number, day in enumerate(days, start=1):
            # The backfill's own heartbeat covers its days (flows/heartbeats.py).
            with without_heartbeats():
                summary = daily_pipeline.with_options(
                    flow_run_name=f"daily-pipeline-{day.isoformat()}"
                )(
                    as_of_date=day,
                    tickers=tickers,
                    sources=sources,
                    mode=mode,
                    horizon=horizon,
                    database_url=database_url,
                    home=home,
                    overrides=overrides,
                    dask_address=dask_address,
                )
            run = BackfillDay.of_run(summary)
            logger.info(
                "%d/%d as of %s: model v%s (%s), champion v%s, %d forecasts written",
                number,
                len(days),
                day,
                run.model_version,
                run.action,
                run.champion_version,
                run.forecasts_written,
            )
            runs.append(run)
    return BackfillSummary(start_date=start_date, end_date=end_date, trading_days=days, runs=runs)
