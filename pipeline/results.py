"""What each stage of a run returns, and the run's summary: frozen, typed records.

A stage of ``pipeline.stages`` returns one of these instead of a dictionary,
so the daily run (``pipeline.run``), the flows and the command line read
``trained.champion_version`` and a type checker sees a misspelt field. The
field names are the keys of the JSON a run stores in ``run_states`` and
publishes as Prefect artifacts: ``model_dump(mode="json")`` gives that JSON
(dates as ``YYYY-MM-DD``, fields in the order declared here), and
``RunSummary.model_validate`` reads a stored summary back.

Every model forbids unknown fields, so a stored summary that validates dumps
back to the same JSON, key for key.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class StageResult(BaseModel):
    """Base of the results: immutable, no unknown fields, NaN kept as NaN in JSON
    (as ``json.dumps`` writes it), not turned into ``null``."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class IngestSummary(StageResult):
    """What one ingest did (``pipeline.ingest.load.IngestReport``); for every input,
    rows read = loaded + quarantined + deferred + superseded."""

    run_id: str
    inputs: int
    inputs_loaded: int
    inputs_unchanged: int
    #: Inputs rejected whole, or that failed to read.
    inputs_rejected: int
    rows_read: int
    rows_loaded: int
    #: Rows written to ``rejected_prices`` instead of ``prices``.
    rows_quarantined: int
    #: Rows dated after the as-of date, left for a later run.
    rows_deferred: int
    #: Rows that lost to another input's row for the same ticker and date.
    rows_superseded: int = 0
    flags: int
    tickers: list[str]
    #: ``<origin>: <error>`` per input that was rejected or failed.
    errors: list[str]


class Freshness(StageResult):
    """The tickers a run processes, and which of them lack the last trading day's close."""

    tickers: list[str]
    #: Each stale ticker's newest price date (``None``: it has no price).
    stale: dict[str, dt.date | None]


class SequencesSummary(StageResult):
    """What the sequences stage built (``pipeline.sequences.build.SequenceResult``)."""

    as_of: dt.date
    #: The tickers whose windows were built, in ticker order.
    tickers: list[str]
    train_windows: int
    validation_windows: int
    #: Why each ticker that was not built was skipped.
    skipped: dict[str, str]


class ModelSummary(StageResult):
    """What the train stage did (``pipeline.model.train.train``), and the version
    forecasts come from (``champion_version``)."""

    model_version: int
    champion_version: int
    #: ``retrain``, ``finetune`` or ``reuse``.
    action: str
    reason: str
    created: bool
    promoted: bool
    decision: str
    data_through: dt.date
    tickers: list[str]
    val_loss: float | None = None
    val_mase: float | None = None
    champion_val_mase: float | None = None
    epochs_run: int | None = None
    train_samples: int | None = None
    fit_seconds: float | None = None
    samples_per_second: float | None = None
    #: What was wrong with registered versions' files (``store.Damage.describe``).
    damaged_files: list[str] = []


class ForecastSummary(StageResult):
    """What the forecast stage wrote (``pipeline.model.forecast.ForecastResult``)."""

    as_of: dt.date
    model_version: int
    horizon: int
    tickers: list[str]
    forecasts_written: int
    #: Tickers forecast from a close older than the as-of date, with that close's date.
    stale: dict[str, dt.date]


class RetentionSummary(StageResult):
    """What a collection deleted, or would delete (``pipeline.retention.Collection``)."""

    as_of: dt.date
    model_versions: list[int]
    reports: list[str]
    bytes_freed: int
    dry_run: bool


class BacktestScore(StageResult):
    """One model's one-step scores in a backtest, folds and tickers pooled by mean."""

    model: str
    #: Whether this is the default LSTM configuration.
    default: bool
    mase: float | None
    coverage: float | None = None
    msis: float | None = None


class BacktestSummary(StageResult):
    """The newest stored backtest's scores per model, best MASE first."""

    run_id: str
    as_of: dt.date
    models: list[BacktestScore]


class BacktestResult(StageResult):
    """What a backtest stored: its metrics table (one row per model and horizon step)
    and one record per model, ticker and step (``pricecast backtest --json``)."""

    run_id: str
    as_of: dt.date
    table: list[dict[str, Any]]
    records: list[dict[str, Any]]


class RunSummary(StageResult):
    """One daily run: where, as of when, and each stage's result; as stored in
    ``run_states`` and published with the run.

    A run that found nothing changed (``unchanged``) returns the stored summary
    of the run it repeats, with its own ingest and ``finished_at``, the time
    that run finished; a run that ran its stages has no ``finished_at`` (the
    field is left out of its JSON, as it always was).
    """

    database: str
    home: str
    as_of: dt.date
    #: The stale tickers left out of the run (``stale_policy=skip``) and their newest
    #: price date (``None``: no price).
    stale: dict[str, dt.date | None]
    ingest: IngestSummary
    sequences: SequencesSummary
    model: ModelSummary
    forecast: ForecastSummary
    backtest: BacktestSummary | None
    retention: RetentionSummary
    #: The HTML report's path.
    report: str
    unchanged: bool
    finished_at: str | None = None

    @model_serializer(mode="wrap")
    def _without_missing_finish(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped = handler(self)
        if self.finished_at is None:
            dumped.pop("finished_at", None)
        return dumped


class BackfillDay(StageResult):
    """One day of a backfill: the daily run as of that trading day."""

    as_of: dt.date
    model_version: int
    #: ``retrain``, ``finetune`` or ``reuse``.
    action: str
    champion_version: int
    forecasts_written: int

    @classmethod
    def of_run(cls, summary: RunSummary) -> BackfillDay:
        """The row of the daily run that ``summary`` describes."""
        return cls(
            as_of=summary.as_of,
            model_version=summary.model.model_version,
            action=summary.model.action,
            champion_version=summary.model.champion_version,
            forecasts_written=summary.forecast.forecasts_written,
        )


class BackfillSummary(StageResult):
    """What a backfill ran (the ``backfill`` flow's result): the range asked for, its
    trading days, and one row per day run, in order."""

    start_date: dt.date
    end_date: dt.date
    #: The exchange's sessions from ``start_date`` to ``end_date``.
    trading_days: list[dt.date]
    runs: list[BackfillDay]
