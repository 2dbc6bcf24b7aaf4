"""Judge a model on the newest span: one-step errors against the naive forecast,
the damping that shrinks its forecasts, and the interval score of its intervals
(calibrated on the same span in ``calibration.py``; the span in ``span.py``).

The span is the validation split of the sequence files (the newest
``validation_fraction`` of each ticker's windows): no model trained on it, and
its scaler never saw it. Errors are in price units and pooled over every
validation point of every ticker; MASE is the model's MAE divided by the naive
forecast's (yesterday's close) on the same points, so naive scores 1.00.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import sha256_json
from pipeline.model.numpy_lstm import read_networks
from pipeline.model.predictor import VOLATILITY_PARAM, Predictor, damped
from pipeline.model.scale import (
    EWMA_WEIGHT,
    ewma_volatility,
    long_run_volatility,
    predicted_volatility,
)
from pipeline.model.span import SpanSeries, SpanStep, stack_points
from pipeline.model.span_cache import SpanCache
from pipeline.scoring.intervals import (
    conformal_quantile,
)
from pipeline.scoring.metrics import msis, naive_scale
from pipeline.sequences.scaling import Params, get_scaler

logger = logging.getLogger(__name__)


@dataclass
class SpanErrors:
    """One-step errors on the validation span, per ticker and pooled."""

    per_ticker: dict[str, dict[str, float]] = field(default_factory=dict)

    def _sum(self, key: str) -> float:
        return sum(row[key] * row["n"] for row in self.per_ticker.values())

    @property
    def n(self) -> int:
        return int(sum(row["n"] for row in self.per_ticker.values()))

    @property
    def mae(self) -> float:
        return self._sum("mae") / self.n if self.n else float("nan")

    @property
    def naive_mae(self) -> float:
        return self._sum("naive_mae") / self.n if self.n else float("nan")

    @property
    def mase(self) -> float:
        naive = self.naive_mae
        return self.mae / naive if naive > 0 else float("nan")

    @property
    def msis(self) -> float:
        """The mean MSIS over the points of the tickers that have one (NaN: none)."""
        rows = [row for row in self.per_ticker.values() if row.get("msis") is not None]
        count = sum(row["n"] for row in rows)
        return sum(row["msis"] * row["n"] for row in rows) / count if count else float("nan")

    def restricted(self, tickers: set[str]) -> SpanErrors:
        """The errors of some tickers only."""
        return SpanErrors({t: row for t, row in self.per_ticker.items() if t in tickers})

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mae": self.mae,
            "naive_mae": self.naive_mae,
            "mase": self.mase,
            "msis": self.msis,
        }


def finite(value: float | None) -> float | None:
    """``value`` as a float for the registry, ``None`` when it is missing, NaN or infinite
    (the errors of a span without points, the MSIS of a model without intervals)."""
    return None if value is None or not np.isfinite(value) else float(value)


#: Damping factors tried on the validation span.
DAMPING_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


@dataclass(frozen=True)
class OneStep:
    """One ticker's validation points: actual closes, one-step predictions, naive
    forecasts, and the standard deviation of the log return the network predicted
    (NaN for a point network)."""

    actual: np.ndarray
    predicted: np.ndarray
    naive: np.ndarray
    spread: np.ndarray


def with_long_run_volatility(
    params: Mapping[str, Params], series: Mapping[str, SpanSeries]
) -> dict[str, Params]:
    """Each ticker's scaler parameters with its long-run volatility over the training
    span added (``VOLATILITY_PARAM``): what a distributional network's volatility
    input is measured against, fitted once like the scaler and kept through fine-tunes."""
    return {
        ticker: {**values, VOLATILITY_PARAM: long_run_volatility(series[ticker].training_closes)}
        for ticker, values in params.items()
    }


def origin_volatility(
    predictor: Predictor, closes: np.ndarray, origins: np.ndarray
) -> np.ndarray | None:
    """The EWMA volatility at each origin, when ``predictor`` needs it (else None)."""
    if not predictor.distributional:
        return None
    return ewma_volatility(closes, np.maximum(origins, 1))


def _one_step(
    predictor: Predictor, series: Mapping[str, SpanSeries], cache: SpanCache | None = None
) -> SpanStep | None:
    """The one-step points of the validation span of every ticker, in one forward pass
    (over the points ``cache`` does not already hold)."""
    points, _ = stack_points(predictor, series)
    if points is None:
        return None
    outputs = None
    if cache is None:
        predicted, spread, outputs = predictor.predict_outputs(
            points.row_tickers(), points.windows(predictor.window), points.volatility(predictor)
        )
    else:
        found, predicted, spread = cache.fill(
            points.names,
            points.owner,
            points.ends - points.first,
            {name: series[name].closes for name in points.names},
        )
        rows = np.flatnonzero(~found)
        if len(rows):
            volatility = points.volatility(predictor)
            predicted[rows], spread[rows] = predictor.predict_distribution(
                points.row_tickers(rows),
                points.windows(predictor.window, rows),
                None if volatility is None else volatility[rows],
            )
        logger.debug("%d of %d span predictions kept from an earlier run", found.sum(), len(found))
    return SpanStep(
        points,
        points.closes[points.ends],
        predicted,
        points.closes[points.ends - 1],
        spread,
        outputs,
    )


def fit_damping(predictor: Predictor, series: Mapping[str, SpanSeries]) -> dict[str, float]:
    """Per ticker, the factor in ``DAMPING_GRID`` with the smallest one-step MAE on the
    validation span, shrinking predictions toward the last close (ties: the larger factor).

    The network's own predictions are used (any damping ``predictor`` has is ignored).
    """
    step = _one_step(_undamped(predictor), series)
    return {} if step is None else _best_damping(step)


def evaluate_span(
    predictor: Predictor,
    series: Mapping[str, SpanSeries],
    level: float | None = None,
    method: str = "ewma",
) -> SpanErrors:
    """One-step errors of ``predictor`` on each ticker's validation targets.

    Targets with fewer than ``predictor.window`` closes before them are left out.
    With a ``level``, each ticker's row also has ``msis``: the MSIS of one-step
    intervals drawn by ``method`` and calibrated on these same points
    (``span_msis``, computed for every ticker at once), so that two models are
    compared on equal terms.
    """
    return judge_span(predictor, series, level, method, damp=False).errors


@dataclass(frozen=True)
class JudgedSpan:
    """A model judged on the validation span (``judge_span``).

    Attributes:
        damping: per ticker, the damping the predictions were judged with.
        errors: the one-step errors (``evaluate_span``).
        step: the one-step predictions judged (damped), for the first step of the
            interval calibration's paths (``calibrate_intervals``); None without points.
    """

    damping: dict[str, float]
    errors: SpanErrors
    step: SpanStep | None


def judge_span(
    predictor: Predictor,
    series: Mapping[str, SpanSeries],
    level: float | None = None,
    method: str = "ewma",
    damp: bool = False,
    cache: SpanCache | None = None,
) -> JudgedSpan:
    """``evaluate_span`` of ``predictor``; with ``damp``, first ``fit_damping`` and then
    judged with that damping, from the one forward pass over the validation span that
    fitting it needs (the damping is the last step of a prediction,
    ``Predictor.predict_distribution``, applied here the same way): the same damping and
    errors, bit for bit, as the two calls.

    ``cache``: predictions of this same predictor kept from an earlier run
    (``span_cache``), used where they still hold (not with ``damp``)."""
    if cache is not None and damp:
        raise ValueError("kept predictions are a damped model's: they cannot fit its damping")
    if not damp:
        step = _one_step(predictor, series, cache)
        errors = SpanErrors() if step is None else _span_errors(series, step, level, method)
        return JudgedSpan(dict(predictor.damping), errors, step)
    step = _one_step(_undamped(predictor), series)
    if step is None:
        return JudgedSpan({}, SpanErrors(), None)
    damping = _best_damping(step)
    factors = np.array([damping.get(name, 1.0) for name in step.points.names])[step.points.owner]
    predicted = damped(step.predicted, step.naive, factors)
    judged = SpanStep(step.points, step.actual, predicted, step.naive, step.spread, step.outputs)
    return JudgedSpan(damping, _span_errors(series, judged, level, method), judged)


def _undamped(predictor: Predictor) -> Predictor:
    return Predictor(predictor.window, predictor.scaler, predictor.params, predictor.networks)


def _best_damping(step: SpanStep) -> dict[str, float]:
    move = step.predicted - step.naive
    errors = np.column_stack(
        [
            step.points.means(np.abs(step.naive + factor * move - step.actual))
            for factor in DAMPING_GRID
        ]
    )
    within = errors <= errors.min(axis=1, keepdims=True) + 1e-12
    best = len(DAMPING_GRID) - 1 - np.argmax(within[:, ::-1], axis=1)
    return {name: float(DAMPING_GRID[b]) for name, b in zip(step.points.names, best, strict=True)}


def _span_errors(
    series: Mapping[str, SpanSeries], step: SpanStep, level: float | None, method: str
) -> SpanErrors:
    errors = SpanErrors()
    points = step.points
    mae = points.means(np.abs(step.actual - step.predicted))
    naive_mae = points.means(np.abs(step.actual - step.naive))
    scores = _span_msis_all(series, step, level, method) if level is not None else None
    for index, ticker in enumerate(points.names):
        row: dict[str, Any] = {
            "n": int(points.counts[index]),
            "mae": float(mae[index]),
            "naive_mae": float(naive_mae[index]),
            "mase": float(mae[index] / naive_mae[index]) if naive_mae[index] > 0 else float("nan"),
        }
        if scores is not None:
            row["msis"] = scores[index]
        errors.per_ticker[ticker] = row
    return errors


def _span_msis_all(
    series: Mapping[str, SpanSeries], step: SpanStep, level: float, method: str
) -> list[float | None]:
    """``span_msis`` of every ticker of ``step``, with grouped array operations."""
    points = step.points
    actual, predicted = step.actual, step.predicted
    owner = points.owner
    train = [series[name].training_closes for name in points.names]
    denominator = np.array([naive_scale(closes) for closes in train])
    good = np.isfinite(actual) & np.isfinite(predicted) & (actual > 0) & (predicted > 0)
    if method == "static":
        scale = np.ones(len(actual))
    elif method == "network":
        scale = step.spread
        good &= np.isfinite(scale)
    else:
        long_run = np.array([long_run_volatility(closes) for closes in train])
        ewma = points.ewma
        scale = np.sqrt(EWMA_WEIGHT * ewma**2 + (1.0 - EWMA_WEIGHT) * long_run[owner] ** 2)
    usable = points.sums(good.astype(int)) == points.counts
    rows = usable[owner]
    ratio = np.divide(actual, predicted, out=np.ones(len(actual)), where=rows)
    normalised = np.divide(np.abs(np.log(ratio)), scale, out=np.zeros(len(actual)), where=rows)
    multiplier = points.quantile(normalised, level)
    width = np.where(rows, multiplier[owner] * np.where(rows, scale, 0.0), 0.0)
    width = np.where(np.isfinite(width), width, 0.0)
    lower, upper = predicted * np.exp(-width), predicted * np.exp(width)
    alpha = 1.0 - level
    interval = (upper - lower) + (2.0 / alpha) * (
        np.clip(lower - actual, 0.0, None) + np.clip(actual - upper, 0.0, None)
    )
    result = points.means(np.where(rows, interval, 0.0)) / np.where(
        denominator > 0, denominator, 1.0
    )
    return [
        float(value) if ok and np.isfinite(m) and d > 0 else None
        for value, ok, m, d in zip(result, usable, multiplier, denominator, strict=True)
    ]


@dataclass(frozen=True)
class ModelEvaluation:
    """A registered model to judge on the validation span: its networks and scalers."""

    path: Path
    tickers: list[str]
    window: int
    scaling: str
    params: dict[str, Params]
    damping: dict[str, float]
    series: dict[str, SpanSeries]
    level: float = 0.9
    intervals: str = "static"

    def salts(self) -> dict[str, str]:
        """Per ticker, a digest of what its predictions depend on besides its closes
        (its scaler parameters and damping; ``span_cache.closes_digest``)."""
        return {
            ticker: sha256_json([self.params[ticker], self.damping.get(ticker)])
            for ticker in self.tickers
        }


def evaluate_model(job: ModelEvaluation, cache: SpanCache | None = None) -> JudgedSpan:
    """A saved model judged on the validation span (``judge_span``).

    The networks are read as NumPy forward passes (``numpy_lstm``), as the
    forecast stage reads them: judging the champion imports no TensorFlow. With
    ``cache`` (this model's predictions kept from an earlier run), only the points it
    does not hold are predicted.

    Raises:
        ModelStoreError: its files are missing or not Keras models.
    """
    networks = read_networks(job.path, None if job.path.is_file() else job.tickers)
    predictor = Predictor(
        window=job.window,
        scaler=get_scaler(job.scaling),
        params=job.params,
        networks=networks,
        damping=job.damping,
    )
    return judge_span(predictor, job.series, job.level, job.intervals, cache=cache)


def span_msis(
    data: SpanSeries, ends: np.ndarray, point: OneStep, level: float, method: str
) -> float | None:
    """MSIS of one-step intervals calibrated on the validation points they are scored on.

    The interval is ``predicted * exp(-+ m * s)``, with ``s`` the predicted
    volatility at each origin (``ewma``), the network's predicted spread
    (``network``) or 1 (``static``) and ``m`` the
    conformal quantile of ``|log(actual / predicted)| / s`` at ``level`` over the
    same points: in-sample for every model alike, so MSIS compares how well each
    model's point forecasts and scales fit the span. Scaled by the mean absolute
    daily change of the closes before the span. ``None`` when it cannot be drawn
    (too few points for the level, or a forecast that is not positive).
    """
    train = data.training_closes
    actual, predicted = point.actual, point.predicted
    if (predicted <= 0).any() or (actual <= 0).any():
        return None
    if method == "static":
        scale = np.ones(len(ends))
    elif method == "network":
        scale = point.spread
        if not np.all(np.isfinite(scale)):
            return None
    else:
        scale = predicted_volatility(data.closes, ends - 1, long_run_volatility(train))
    multiplier = conformal_quantile((np.abs(np.log(actual / predicted)) / scale)[:, None], level)
    denominator = naive_scale(train)
    if not np.isfinite(multiplier[0]) or denominator <= 0:
        return None
    width = multiplier[0] * scale
    return msis(actual, predicted * np.exp(-width), predicted * np.exp(width), level, denominator)
