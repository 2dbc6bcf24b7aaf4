"""The ``daily-pipeline`` flow: ingest, sequences, train, forecast."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext

from flows import show_library_logs
from flows.artifacts import publish_artifacts
from flows.runners import fan_out_for, run_forecast, run_sequences
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
    train_task,
    unchanged_run_task,
)
from pipeline.db.engine import describe_url
from pipeline.db.lock import pipeline_lock
from pipeline.db.runs import run_key
from pipeline.errors import MissingDataError, StaleDataError
from pipeline.freshness import describe_stale
from pipeline.ingest.sources import NO_SOURCE
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
    """Settings from the environment, overridden by the flow's parameters."""
    given: dict[str, Any] = dict(overrides or {})
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


FLOW_NAME = "daily-pipeline"


def _run_settings(settings: Settings, home: str, mode: str) -> dict[str, Any]:
    """What, besides the as-of date, tickers and data, a run's outputs depend on."""
    return {
        "sequences": settings.sequence_config().to_dict(),
        "model": settings.training_config().to_dict(),
        "horizon": settings.horizon,
        "mode": mode,
        "home": home,
        "exchange": settings.exchange,
    }


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
) -> dict[str, Any]:
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
            sequences and forecasts on (``flows.runners``); default
            ``PRICECAST_DASK_ADDRESS``, else local threads (``PRICECAST_WORKERS``).
        rerun: run every stage even when nothing changed.

    Returns:
        A summary: database, as-of date, rows ingested, model version and
        decision, forecasts written.
    """
    show_library_logs()
    logger = get_run_logger()
    settings = build_settings(
        database_url, home, sources, tickers, horizon, overrides, dask_address
    )
    url = settings.resolved_database_url
    home_path = str(settings.home_path)
    wanted = settings.tickers
    logger.info("database %s, home %s", describe_url(url), home_path)
    with pipeline_lock(url, settings.lock_wait_seconds):
        return _run_stages(logger, settings, url, home_path, wanted, as_of_date, mode, rerun)


def _run_stages(
    logger: Any,
    settings: Settings,
    url: str,
    home_path: str,
    wanted: list[str] | None,
    as_of_date: dt.date | None,
    mode: str,
    rerun: bool = False,
) -> dict[str, Any]:
    """The body of ``daily_pipeline``, run while holding the database's pipeline lock."""
    prepare_database(url)
    fan = fan_out_for(settings)  # before any stage: an unreachable cluster fails at once
    if fan.parallel:
        logger.info("per-shard work: %s", fan.describe())

    as_of = as_of_date or scheduled_as_of(settings.exchange)
    if not settings.sources:
        logger.warning(NO_SOURCE)
    ingested = ingest_task(url, settings.sources, as_of, wanted, settings)
    if ingested["rows_quarantined"] or ingested["inputs_rejected"]:
        logger.warning(
            "%d rows quarantined, %d inputs rejected whole: %s",
            ingested["rows_quarantined"],
            ingested["inputs_rejected"],
            "; ".join(ingested["errors"]) or "see rejected_prices",
        )
    if as_of is None:
        as_of = latest_price_date_task(url, wanted)
        if as_of is None:
            which = f" of {', '.join(wanted)}" if wanted else ""
            hint = "" if settings.sources else f" ({NO_SOURCE})"
            raise MissingDataError(
                f"the database holds no prices{which}; nothing to forecast{hint}"
            )
        logger.info("as-of date: %s (the newest price)", as_of)
    else:
        logger.info("as-of date: %s", as_of)

    fresh = freshness_task(url, as_of, wanted)
    stale = fresh["stale"]
    tickers = [ticker for ticker in fresh["tickers"] if ticker not in stale]
    if stale:
        message = f"stale as of {as_of}: {describe_stale(stale)}"
        if settings.stale_policy == "fail" or not tickers:
            advice = (
                ", or set PRICECAST_STALE_POLICY=skip to forecast the fresh tickers only"
                if tickers
                else ""
            )
            raise StaleDataError(
                f"{message}; no forecast was written"
                + ("" if tickers else " (no ticker is fresh)")
                + f". Ingest the missing closes{advice}"
            )
        logger.warning("%s; forecasting the fresh tickers only", message)

    key = run_key(FLOW_NAME, as_of, tickers, _run_settings(settings, home_path, mode))
    previous = None if rerun else unchanged_run_task(url, key, as_of)
    if previous is not None:
        summary = {**previous, "ingest": ingested, "unchanged": True}
        logger.info(
            "nothing changed since the run that finished at %s (same prices, champion v%s "
            "and forecasts): its %d forecasts as of %s stand; rerun=True runs every stage",
            previous["finished_at"],
            summary["model"]["champion_version"],
            summary["forecast"]["forecasts_written"],
            as_of,
        )
        publish_artifacts(
            summary,
            forecast_rows_task(url, as_of, summary["model"]["champion_version"]),
            settings.report_base_url,
        )
        return summary

    sequences = run_sequences(fan, url, home_path, as_of, tickers, settings.sequence_config())
    if sequences["skipped"]:
        logger.warning("tickers without enough history, skipped: %s", sequences["skipped"])
    trained = train_task(
        url,
        home_path,
        as_of,
        sequences["tickers"],
        mode,
        settings.sequence_config(),
        settings.training_config(),
    )
    logger.info(
        "model v%s: %s (%s); forecasting with champion v%s",
        trained["model_version"],
        trained["action"],
        trained["reason"],
        trained["champion_version"],
    )
    if trained["created"]:
        logger.info("v%s %s", trained["model_version"], trained["decision"])
    forecasted = run_forecast(
        fan, url, as_of, sequences["tickers"], settings.horizon, trained["champion_version"]
    )
    summary = {
        "database": describe_url(url),
        "home": home_path,
        "as_of": as_of.isoformat(),
        "stale": {ticker: day and day.isoformat() for ticker, day in stale.items()},
        "ingest": ingested,
        "sequences": sequences,
        "model": trained,
        "forecast": forecasted,
        "backtest": backtest_summary_task(url),
    }
    summary["retention"] = retention_task(
        url, home_path, as_of, settings.keep_unpromoted, settings.keep_days
    )
    summary["report"] = report_task(url, home_path, as_of)
    summary["unchanged"] = False
    record_run_task(url, key, FLOW_NAME, as_of, summary)
    publish_artifacts(
        summary,
        forecast_rows_task(url, as_of, trained["champion_version"]),
        settings.report_base_url,
    )
    logger.info(
        "done: %d tickers, %d rows ingested, model v%s (%s), champion v%s, %d forecasts written",
        len(forecasted["tickers"]),
        ingested["rows_loaded"],
        trained["model_version"],
        trained["action"],
        trained["champion_version"],
        forecasted["forecasts_written"],
    )
    return summary
