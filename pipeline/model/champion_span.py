"""The champion judged on the newest span, with its span predictions kept from one
run to the next (``span_cache``).

Every train stage judges the champion on the newest validation span: its MASE there
says whether it drifted (``promotion.checks_drift``), and on a retrain or fine-tune
day the new version must be no worse on the same points (``promotion.gate``). That is
a forward pass over every validation point of every ticker. ``evaluate_champion``
judges the champion as ``load_predictor`` would load it (its files checked against
the registry), in NumPy in this process (no worker, no TensorFlow), predicting only
the points its kept predictions do not hold, and keeps the new ones for tomorrow.
``keep_new_champion_span`` keeps the predictions a version just promoted was judged
with (``fit.NetworkOutcome.span``), so the first day that judges it as the champion
does not predict the whole span again.

The kept file is a cache: failing to write it is logged and costs the next run time,
nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from pipeline.db.models import get_model, model_scalers
from pipeline.errors import ModelStoreError, StorageError
from pipeline.model.fit import NetworkOutcome
from pipeline.model.predictor import version_scaling
from pipeline.model.span import SpanSeries
from pipeline.model.span_cache import (
    SpanCache,
    champion_span_path,
    load_span_cache,
    model_key,
    predictions_cache,
    save_span_cache,
    span_cache,
)
from pipeline.model.store import check_files
from pipeline.model.validation import ModelEvaluation, SpanErrors, evaluate_model

logger = logging.getLogger(__name__)


def _champion_job(
    conn: Connection, champion: Mapping[str, Any], series: Mapping[str, SpanSeries]
) -> ModelEvaluation:
    """What judging ``champion`` on the newest span takes, as ``load_predictor`` would
    load it (its files checked against the registry)."""
    scalers = model_scalers(conn, champion["version"])
    tickers = sorted(set(series) & set(champion["tickers"]) & set(scalers))
    encoding = version_scaling(champion, scalers, tickers)
    return ModelEvaluation(
        path=check_files(champion),
        tickers=tickers,
        window=encoding.window,
        scaling=encoding.scaling,
        params=encoding.params,
        damping=encoding.damping,
        series={ticker: series[ticker] for ticker in tickers},
        level=float(champion["hyperparameters"].get("interval_level", 0.9)),
        # Models registered before the ewma intervals had static ones.
        intervals=str(champion["hyperparameters"].get("intervals", "static")),
    )


def _span_key(champion: Mapping[str, Any], job: ModelEvaluation) -> str:
    """The key of ``champion``'s kept span predictions (``span_cache.model_key``)."""
    return model_key(
        int(champion["version"]),
        champion.get("file_sha256"),
        {"window": job.window, "scaling": job.scaling},
    )


def _keep_span(path: Path, cache: SpanCache) -> None:
    try:
        save_span_cache(path, cache)
    except (OSError, StorageError) as exc:  # a slower run tomorrow, nothing worse
        logger.warning("the champion's span predictions were not kept: %s", exc)


def evaluate_champion(
    conn: Connection,
    home: Path,
    champion: Mapping[str, Any],
    series: Mapping[str, SpanSeries],
) -> SpanErrors | None:
    """The champion's errors on the newest span, as ``load_predictor`` would load it
    (in NumPy, in this process: no worker and no TensorFlow needed)."""
    job = _champion_job(conn, champion, series)
    # Its predictions at yesterday's points are kept (``span_cache``): only the new
    # points are predicted, unless its files, parameters or a ticker's closes changed.
    salts = job.salts()
    key = _span_key(champion, job)
    cache_path = champion_span_path(home)
    try:
        judged = evaluate_model(job, load_span_cache(cache_path, key, salts))
    except ModelStoreError as exc:
        logger.warning("champion v%s cannot be evaluated: %s", champion["version"], exc)
        return None
    if judged.step is not None:
        _keep_span(cache_path, span_cache(key, judged.step, salts))
    return judged.errors


def keep_new_champion_span(
    conn: Connection,
    home: Path,
    version: int,
    series: Mapping[str, SpanSeries],
    outcomes: Sequence[NetworkOutcome],
) -> None:
    """Keep the span predictions of ``version``, just promoted, as its judging made
    them (``NetworkOutcome.span``), so the next day that judges it predicts only the
    new points; nothing is kept when an outcome has none (the span cache then stays
    another model's, never used for this one)."""
    spans = [outcome.span for outcome in outcomes if outcome.span is not None]
    model = get_model(conn, version)
    if not spans or len(spans) != len(outcomes) or model is None:
        return
    try:
        job = _champion_job(conn, model, series)
    except ModelStoreError as exc:
        logger.warning("the span predictions of v%d were not kept: %s", version, exc)
        return
    closes = {ticker: series[ticker].closes for ticker in job.tickers}
    cache = predictions_cache(_span_key(model, job), spans, closes, job.salts())
    _keep_span(champion_span_path(home), cache)
