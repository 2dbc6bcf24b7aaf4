"""The daily run's policy, in one place: which stages run, in what order, and when to stop.

A run ingests every source, settles its as-of date, checks that each ticker
has the last trading day's close, stops early when nothing changed since a
completed run with the same inputs, and otherwise rebuilds sequences, trains
or reuses the model, forecasts, collects old files, writes the report and
records itself. The rules:

* **As-of date**: the one given (a schedule's, or the caller's), else the
  newest price ingested; none at all is ``MissingDataError``, saying how to
  configure a source when none is.
* **Freshness**: tickers without the last trading day's close are *stale*.
  ``stale_policy="skip"`` forecasts the fresh ones and reports the others;
  ``"fail"`` (or no fresh ticker at all) is ``StaleDataError``, and nothing
  is written.
* **Unchanged runs**: a run whose key (as-of date, tickers, the settings its
  outputs depend on: ``run_settings``) matches a completed run, with the same
  prices, champion and forecasts since (``pipeline.db.runs``), returns that
  run's summary marked ``unchanged`` after ingesting; ``rerun`` runs every
  stage anyway.
* **The lock**: before each stage and before recording itself, a run checks
  that it still holds the database's lock (``pipeline.db.lock.assert_lock_held``);
  if the lock's connection was lost, the server released the lock and another
  run may have started, so the run stops there with ``LockLostError``.
* **Shards**: per-shard summaries merge into the summary of one stage over
  all the tickers (``merge_sequence_summaries``, ``merge_forecast_summaries``).

The stages themselves are plain functions of plain values
(``pipeline.stages``), each returning a typed result (``pipeline.results``);
``daily_run`` takes them as a ``Stages`` record, so the Prefect flow passes
its tasks (``flows.daily``) and tests or other orchestrators pass the
functions themselves. Nothing here imports Prefect.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.db.engine import describe_url
from pipeline.db.lock import assert_lock_held
from pipeline.db.runs import run_key
from pipeline.errors import MissingDataError, StaleDataError
from pipeline.freshness import describe_stale
from pipeline.ingest.sources import NO_SOURCE
from pipeline.results import (
    BacktestSummary,
    ForecastSummary,
    Freshness,
    IngestSummary,
    ModelSummary,
    RetentionSummary,
    RunSummary,
    SequencesSummary,
)
from pipeline.settings import Settings

logger = logging.getLogger(__name__)

#: The name a daily run is recorded under (``run_states``) and the flow's name.
DAILY_RUN = "daily-pipeline"


@dataclass(frozen=True)
class Stages:
    """The stage callables a daily run calls, with ``pipeline.stages``' signatures.

    ``flows.daily`` fills it with Prefect tasks (sequences and forecasts fanned
    out over shards); ``local_stages`` with the plain functions.
    """

    ingest: Callable[..., IngestSummary]
    latest_price_date: Callable[..., dt.date | None]
    freshness: Callable[..., Freshness]
    unchanged_run: Callable[..., RunSummary | None]
    sequences: Callable[..., SequencesSummary]
    train: Callable[..., ModelSummary]
    forecast: Callable[..., ForecastSummary]
    backtest_summary: Callable[..., BacktestSummary | None]
    retention: Callable[..., RetentionSummary]
    report: Callable[..., str]
    record_run: Callable[..., None]
    forecast_rows: Callable[..., list[dict]]
    #: Called with the finished (or unchanged) summary and its forecast rows.
    publish: Callable[[RunSummary, list[dict]], None] = lambda summary, rows: None


def local_stages() -> Stages:
    """The stages as plain function calls in this process (no orchestrator)."""
    from pipeline import stages

    return Stages(
        ingest=stages.ingest_sources,
        latest_price_date=stages.latest_price_date,
        freshness=stages.freshness,
        unchanged_run=stages.unchanged_run,
        sequences=stages.sequences,
        train=stages.train_model,
        forecast=stages.forecast_prices,
        backtest_summary=stages.backtest_summary,
        retention=stages.retention,
        report=stages.report,
        record_run=stages.record_completed_run,
        forecast_rows=stages.forecast_rows,
    )


def run_settings(settings: Settings, home: str, mode: str) -> dict[str, Any]:
    """What, besides the as-of date, tickers and data, a run's outputs depend on."""
    model = settings.training_config().to_dict()
    if model["ticker_groups"] == 1:
        # One network: the key of runs recorded before ticker groups existed still matches.
        model.pop("ticker_groups")
    return {
        "sequences": settings.sequence_config().to_dict(),
        "model": model,
        "horizon": settings.horizon,
        "mode": mode,
        "home": home,
        "exchange": settings.exchange,
    }


def fresh_tickers(
    tickers: Sequence[str], stale: dict[str, dt.date | None], as_of: dt.date, policy: str
) -> list[str]:
    """The tickers to forecast under the stale-data ``policy`` (``skip`` or ``fail``).

    Raises:
        StaleDataError: a ticker is stale and the policy is ``fail``, or no ticker is fresh.
    """
    fresh = [ticker for ticker in tickers if ticker not in stale]
    if not stale:
        return fresh
    message = f"stale as of {as_of}: {describe_stale(stale)}"
    if policy == "fail" or not fresh:
        advice = (
            ", or set PRICECAST_STALE_POLICY=skip to forecast the fresh tickers only"
            if fresh
            else ""
        )
        raise StaleDataError(
            f"{message}; no forecast was written"
            + ("" if fresh else " (no ticker is fresh)")
            + f". Ingest the missing closes{advice}"
        )
    logger.warning("%s; forecasting the fresh tickers only", message)
    return fresh


def _settle_as_of(
    stages: Stages, url: str, as_of: dt.date | None, tickers: list[str] | None, sourced: bool
) -> dt.date:
    if as_of is not None:
        logger.info("as-of date: %s", as_of)
        return as_of
    newest = stages.latest_price_date(url, tickers)
    if newest is None:
        which = f" of {', '.join(tickers)}" if tickers else ""
        hint = "" if sourced else f" ({NO_SOURCE})"
        raise MissingDataError(f"the database holds no prices{which}; nothing to forecast{hint}")
    logger.info("as-of date: %s (the newest price)", newest)
    return newest


def daily_run(
    stages: Stages,
    settings: Settings,
    as_of: dt.date | None,
    mode: str,
    run_id: str,
    now: dt.datetime,
    rerun: bool = False,
) -> RunSummary:
    """One daily run under the rules of this module; the caller holds the run lock.

    Args:
        stages: the stage callables (``local_stages()``, or an orchestrator's).
        settings: the run's settings (database, home, sources, tickers, model).
        as_of: the last date whose prices may be used; ``None``: the newest price.
        mode: ``auto``, ``retrain`` or ``finetune``.
        run_id: recorded with what the ingest loads (the flow run's id).
        now: the wall-clock time, for retention's age rules.
        rerun: run every stage even when nothing changed.

    Returns:
        The run's summary (stored in ``run_states`` as its ``model_dump(mode="json")``):
        database, home, as-of date, stale tickers and the result of each stage,
        ``unchanged`` when it stopped early.

    Raises:
        MissingDataError: no prices to forecast from.
        StaleDataError: under the freshness rule above.
        LockLostError: the run's lock was lost (checked before each stage).
    """
    url = settings.resolved_database_url
    assert_lock_held(url, "ingesting")
    home = str(settings.home_path)
    wanted = settings.tickers
    if not settings.sources:
        logger.warning(NO_SOURCE)
    ingested = stages.ingest(url, settings.sources, as_of, wanted, settings, run_id)
    if ingested.rows_quarantined or ingested.inputs_rejected:
        logger.warning(
            "%d rows quarantined, %d inputs rejected whole: %s",
            ingested.rows_quarantined,
            ingested.inputs_rejected,
            "; ".join(ingested.errors) or "see rejected_prices",
        )
    as_of = _settle_as_of(stages, url, as_of, wanted, bool(settings.sources))

    fresh = stages.freshness(url, as_of, wanted)
    tickers = fresh_tickers(fresh.tickers, fresh.stale, as_of, settings.stale_policy)

    key = run_key(DAILY_RUN, as_of, tickers, run_settings(settings, home, mode))
    previous = None if rerun else stages.unchanged_run(url, key, as_of)
    if previous is not None:
        summary = previous.model_copy(update={"ingest": ingested, "unchanged": True})
        logger.info(
            "nothing changed since the run that finished at %s (same prices, champion v%s "
            "and forecasts): its %d forecasts as of %s stand; rerun=True runs every stage",
            previous.finished_at,
            summary.model.champion_version,
            summary.forecast.forecasts_written,
            as_of,
        )
        stages.publish(summary, stages.forecast_rows(url, as_of, summary.model.champion_version))
        return summary

    assert_lock_held(url, "building sequences")
    built = stages.sequences(url, home, as_of, tickers, settings.sequence_config())
    if built.skipped:
        logger.warning("tickers without enough history, skipped: %s", built.skipped)
    assert_lock_held(url, "training")
    trained = stages.train(
        url,
        home,
        as_of,
        built.tickers,
        mode,
        settings.sequence_config(),
        settings.training_config(),
        settings.train_workers,
    )
    logger.info(
        "model v%s: %s (%s); forecasting with champion v%s",
        trained.model_version,
        trained.action,
        trained.reason,
        trained.champion_version,
    )
    if trained.created:
        logger.info("v%s %s", trained.model_version, trained.decision)
    assert_lock_held(url, "forecasting")
    forecasted = stages.forecast(
        url, as_of, built.tickers, settings.horizon, trained.champion_version
    )
    backtest = stages.backtest_summary(url)
    assert_lock_held(url, "collecting old files")
    retention = stages.retention(
        url, home, as_of, settings.keep_unpromoted, settings.keep_days, now
    )
    assert_lock_held(url, "writing the report")
    summary = RunSummary(
        database=describe_url(url),
        home=home,
        as_of=as_of,
        stale=fresh.stale,
        ingest=ingested,
        sequences=built,
        model=trained,
        forecast=forecasted,
        backtest=backtest,
        retention=retention,
        report=stages.report(url, home, as_of),
        unchanged=False,
    )
    assert_lock_held(url, "recording the run")
    stages.record_run(url, key, DAILY_RUN, as_of, summary)
    stages.publish(summary, stages.forecast_rows(url, as_of, trained.champion_version))
    logger.info(
        "done: %d tickers, %d rows ingested, model v%s (%s), champion v%s, %d forecasts written",
        len(forecasted.tickers),
        ingested.rows_loaded,
        trained.model_version,
        trained.action,
        trained.champion_version,
        forecasted.forecasts_written,
    )
    return summary


def merge_sequence_summaries(
    as_of: dt.date, summaries: Sequence[SequencesSummary], shards: Sequence[Sequence[str]]
) -> SequencesSummary:
    """The summary ``build_sequences`` gives for all the shards' tickers at once.

    Raises:
        MissingDataError: no shard built anything because none of its tickers had a price.
    """
    if not any(summary.tickers for summary in summaries):
        wanted = ", ".join(ticker for shard in shards for ticker in shard)
        raise MissingDataError(f"no prices for {wanted} on or before {as_of}; ingest prices first")
    skipped: dict[str, str] = {}
    for summary in summaries:
        skipped.update(summary.skipped)
    return SequencesSummary(
        as_of=as_of,
        tickers=[ticker for summary in summaries for ticker in summary.tickers],
        train_windows=sum(summary.train_windows for summary in summaries),
        validation_windows=sum(summary.validation_windows for summary in summaries),
        skipped=dict(sorted(skipped.items())),
    )


def merge_forecast_summaries(summaries: Sequence[ForecastSummary]) -> ForecastSummary:
    """The summary ``forecast`` gives for all the shards' tickers at once."""
    stale: dict[str, dt.date] = {}
    for summary in summaries:
        stale.update(summary.stale)
    first = summaries[0]
    return ForecastSummary(
        as_of=first.as_of,
        model_version=first.model_version,
        horizon=first.horizon,
        tickers=[ticker for summary in summaries for ticker in summary.tickers],
        forecasts_written=sum(summary.forecasts_written for summary in summaries),
        stale=dict(sorted(stale.items())),
    )
