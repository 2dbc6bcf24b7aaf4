"""The ``daily-pipeline`` flow: the daily run (``pipeline.run``) with its stages as tasks.

The run's rules (as-of date, freshness, unchanged runs) live in
``pipeline.run``; this flow takes the run lock, prepares the database, picks
where per-shard work runs and maps each stage to its Prefect task.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from flows import show_library_logs
from flows.artifacts import publish_artifacts
from flows.runners import FanOut, fan_out_for, run_forecast, run_sequences, run_training
from flows.tasks import (
    backtest_summary_task,
    forecast_rows_task,
    freshness_task,
    ingest_task,
    latest_price_date_task,
    prepare_database,
    record_run_task,
    report_task,
    retention_task,
    unchanged_run_task,
)
from pipeline.db.engine import describe_url
from pipeline.db.limits import DatabaseFields
from pipeline.db.lock import pipeline_lock
from pipeline.errors import ConfigurationError
from pipeline.results import RunSummary
from pipeline.run import DAILY_RUN, Stages, daily_run
from pipeline.settings import Settings
from pipeline.trading_calendar import DEFAULT_EXCHANGE, previous_session

#: The exchange whose local date a scheduled run's time is read in.
EXCHANGE_TIMEZONE = ZoneInfo("America/New_York")


def scheduled_as_of(exchange: str = DEFAULT_EXCHANGE) -> dt.date | None:
    """The as-of date of a run a schedule created: the exchange's last trading day on or
    before the scheduled time's New York date.

    A Saturday retrain therefore works as of Friday, and a run scheduled on a
    holiday as of the trading day before it, like the backfill of those days.
    Runs started by hand (from the command line, or a deployment run triggered
    by a person) return ``None``: their as-of date defaults to the newest price.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or not context.flow_run.auto_scheduled:
        return None
    scheduled = context.flow_run.expected_start_time
    if scheduled is None:
        return None
    return previous_session(scheduled.astimezone(EXCHANGE_TIMEZONE).date(), exchange)


def build_settings(
    database_url: str | None = None,
    home: str | None = None,
    sources: list[str] | None = None,
    tickers: list[str] | None = None,
    horizon: int | None = None,
    overrides: dict[str, Any] | None = None,
    dask_address: str | None = None,
) -> Settings:
    """Settings from the environment, overridden by the flow's parameters.

    Raises:
        ConfigurationError: ``overrides`` names no setting (a typo would otherwise be
            ignored silently, as unknown ``PRICECAST_*`` variables are), or one read
            from the environment only (``DatabaseFields``).
    """
    given: dict[str, Any] = dict(overrides or {})
    unknown = sorted(set(given) - set(Settings.model_fields))
    if unknown:
        raise ConfigurationError(
            f"unknown setting {', '.join(map(repr, unknown))} in overrides; the settings are "
            f"{', '.join(sorted(Settings.model_fields))}"
        )
    # Every process that connects (threads, Dask workers) reads these itself.
    environment_only = sorted(set(given) & set(DatabaseFields.model_fields))
    if environment_only:
        raise ConfigurationError(
            f"setting {', '.join(map(repr, environment_only))} cannot be overridden per run: "
            "each process that connects to the database reads it from its environment; set "
            + ", ".join(f"PRICECAST_{name.upper()}" for name in environment_only)
            + " there"
        )
    for name, value in (
        ("database_url", database_url),
        ("home", home),
        ("source", sources),
        ("tickers", tickers),
        ("horizon", horizon),
        ("dask_address", dask_address),
    ):
        if value is not None:
            given[name] = value
    return Settings(**given)


#: A hung run would hold its deployment's only slot; no healthy run takes this long.
FLOW_TIMEOUT_SECONDS = 8 * 3600


FLOW_NAME = DAILY_RUN


def flow_stages(fan: FanOut, report_base_url: str | None) -> Stages:
    """The daily run's stages as this flow's tasks; sequences and forecasts fanned out,
    and, on a Dask cluster, the networks of the training (``runners.run_training``)."""
    return Stages(
        ingest=ingest_task,
        latest_price_date=latest_price_date_task,
        freshness=freshness_task,
        unchanged_run=unchanged_run_task,
        sequences=functools.partial(run_sequences, fan),
        train=functools.partial(run_training, fan),
        forecast=functools.partial(run_forecast, fan),
        backtest_summary=backtest_summary_task,
        retention=retention_task,
        report=report_task,
        record_run=record_run_task,
        forecast_rows=forecast_rows_task,
        publish=lambda summary, rows: publish_artifacts(summary, rows, report_base_url),
    )


@flow(name=FLOW_NAME, log_prints=False, timeout_seconds=FLOW_TIMEOUT_SECONDS)
def daily_pipeline(
    as_of_date: dt.date | None = None,
    tickers: list[str] | None = None,
    sources: list[str] | None = None,
    mode: str = "auto",
    horizon: int | None = None,
    database_url: str | None = None,
    home: str | None = None,
    overrides: dict[str, Any] | None = None,
    dask_address: str | None = None,
    rerun: bool = False,
) -> RunSummary:
    """Ingest prices, rebuild sequences, train or reuse the model, and write forecasts.

    A run that finds nothing changed since the last completed run with the
    same as-of date, tickers and settings (no price written, the same
    champion and forecasts: ``pipeline.db.runs``) stops after ingesting and
    returns that run's summary, marked ``unchanged``; ``rerun`` runs every
    stage anyway.

    Args:
        as_of_date: the last date whose prices may be used. Default: the
            scheduled run's date in New York, else the newest price ingested.
        tickers: tickers to process; default ``PRICECAST_TICKERS``, else all.
        sources: files, folders, HTTP URL templates, ``yahoo`` or ``demo`` (the
            bundled sample); default ``PRICECAST_SOURCE``, else none: nothing is
            ingested and the log says how to configure a source.
        mode: ``auto``, ``retrain`` or ``finetune``.
        horizon: trading days to forecast; default ``PRICECAST_HORIZON`` (5).
        database_url: default ``PRICECAST_DATABASE_URL``, else SQLite in the home folder.
        home: folder for sequence and model files; default ``PRICECAST_HOME``.
        overrides: other settings for this run, e.g. ``{"epochs": 5}``.
        dask_address: a Dask scheduler (``tcp://host:8786``) to run the per-shard
            sequences and forecasts and the training's networks on
            (``flows.runners``); default
            ``PRICECAST_DASK_ADDRESS``, else local threads (``PRICECAST_WORKERS``).
        rerun: run every stage even when nothing changed.

    Returns:
        The run's summary (``pipeline.results.RunSummary``): database, as-of date,
        rows ingested, model version and decision, forecasts written.
    """
    show_library_logs()
    logger = get_run_logger()
    settings = build_settings(
        database_url, home, sources, tickers, horizon, overrides, dask_address
    )
    url = settings.resolved_database_url
    logger.info("database %s, home %s", describe_url(url), settings.home_path)
    with pipeline_lock(url, settings.lock_wait_seconds):
        prepare_database(url)
        fan = fan_out_for(settings)  # before any stage: an unreachable cluster fails at once
        if fan.parallel:
            logger.info("per-shard work: %s", fan.describe())
        return daily_run(
            flow_stages(fan, settings.report_base_url),
            settings,
            as_of_date or scheduled_as_of(settings.exchange),
            mode,
            run_id=str(flow_run.id or uuid.uuid4().hex),
            now=dt.datetime.now(dt.UTC),
            rerun=rerun,
        )
