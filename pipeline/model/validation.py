"""Judge a model on the newest span: one-step errors against the naive forecast,
and prediction intervals calibrated on the same held-out windows.

The span is the validation split of the sequence files (the newest
``validation_fraction`` of each ticker's windows): no model trained on it, and
its scaler never saw it. Errors are in price units and pooled over every
validation point of every ticker; MASE is the model's MAE divided by the naive
forecast's (yesterday's close) on the same points, so naive scores 1.00.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model.numpy_lstm import read_networks
from pipeline.model.predictor import VOLATILITY_PARAM, Predictor
from pipeline.model.scale import (
    EWMA_WEIGHT,
    ewma_volatility,
    long_run_volatility,
    predicted_volatility,
    step_scales,
)
from pipeline.scoring.intervals import (
    _positive_matrix,
    conformal_quantile,
    conformal_rank,
)
from pipeline.scoring.metrics import msis, naive_scale
from pipeline.sequences.scaling import Params, get_scaler
from pipeline.sequences.windows import TickerWindows


@dataclass(frozen=True)
class SpanSeries:
    """One ticker's raw closes up to the as-of date and where its validation targets are."""

    closes: np.ndarray
    targets: np.ndarray  # positions in ``closes`` of the validation targets

    @property
    def training_closes(self) -> np.ndarray:
        """The closes before the first validation target: the span the scaler saw
        (at least two, for a daily change)."""
        return self.closes[: max(2, int(self.targets.min()))]


def span_series(windows: TickerWindows) -> SpanSeries:
    """A ticker's closes and validation target positions, from its windows."""
    return SpanSeries(closes=windows.closes, targets=windows.validation_rows() + windows.window)


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


@dataclass(frozen=True)
class _Points:
    """Validation points of many tickers at once, grouped by ticker.

    The points of ``names[k]`` are rows ``starts[k]:starts[k + 1]``, in the order of
    their targets; ``closes`` holds those tickers' closes one after the other,
    ``first`` the position of each point's ticker's first close in it, and ``ends``
    the position of each point's target. Per-ticker figures are grouped reductions
    over these rows (``sums``), never a Python loop over windows.
    """

    names: list[str]
    starts: np.ndarray
    closes: np.ndarray
    first: np.ndarray
    ends: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def owner(self) -> np.ndarray:
        """The index in ``names`` of each point's ticker."""
        return np.repeat(np.arange(len(self.names)), self.counts)

    def row_tickers(self) -> list[str]:
        return np.array(self.names, dtype=object)[self.owner].tolist()

    def windows(self, window: int) -> np.ndarray:
        """The ``window`` closes before each target, ``(n, window)``."""
        return self.closes[self.ends[:, None] + np.arange(-window, 0)[None, :]]

    def following(self, horizon: int) -> np.ndarray:
        """The target and the closes after it, ``(n, horizon)``."""
        return self.closes[self.ends[:, None] + np.arange(horizon)[None, :]]

    def volatility(self, predictor: Predictor) -> np.ndarray | None:
        """The EWMA volatility at each origin (the close before the target), when
        ``predictor`` needs it (``origin_volatility`` for all tickers at once)."""
        if not predictor.distributional:
            return None
        return ewma_volatility(self.closes, self.ends - 1, first=self.first)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per ticker, the sum of ``values`` over its points (along the first axis)."""
        return np.add.reduceat(values, self.starts[:-1], axis=0)

    def means(self, values: np.ndarray) -> np.ndarray:
        counts = self.counts
        return self.sums(values) / (counts if np.ndim(values) == 1 else counts[:, None])

    def quantile(self, scores: np.ndarray, level: float) -> np.ndarray:
        """Per ticker, ``conformal_quantile`` of its points' ``scores`` (``(n,)`` or
        ``(n, H)``): the same order statistic, every ticker sorted at once."""
        values = np.asarray(scores, dtype=float)
        flat = values.ndim == 1
        values = values.reshape(len(values), -1)
        counts = self.counts
        # NaN pads sort last, after the ticker's own values (NaN included), as alone.
        padded = np.full((len(self.names), int(counts.max()), values.shape[1]), np.nan)
        padded[self.owner, np.arange(len(values)) - np.repeat(self.starts[:-1], counts)] = values
        padded.sort(axis=1)
        ranks = np.array([conformal_rank(int(n), level) for n in counts])
        out = padded[np.arange(len(counts)), np.minimum(ranks, counts) - 1]
        out[ranks > counts] = np.inf
        return out[:, 0] if flat else out


def _stack(
    predictor: Predictor, series: Mapping[str, SpanSeries], horizon: int = 0
) -> tuple[_Points | None, list[str]]:
    """The validation points of every ticker ``predictor`` knows, stacked (``_Points``;
    None when there are none), and the tickers left without a point. A point needs
    ``predictor.window`` closes before its target and, with a ``horizon``, the
    ``horizon - 1`` closes after it."""
    names, empty, pieces, ends, first = [], [], [], [], []
    offset = 0
    for ticker, data in sorted(series.items()):
        if ticker not in predictor.params:
            continue
        keep = data.targets >= predictor.window
        if horizon:
            keep &= data.targets + horizon <= len(data.closes)
        targets = data.targets[keep]
        if not len(targets):
            empty.append(ticker)
            continue
        names.append(ticker)
        pieces.append(data.closes)
        ends.append(targets + offset)
        first.append(np.full(len(targets), offset))
        offset += len(data.closes)
    if not names:
        return None, empty
    ends_all = np.concatenate(ends).astype(np.intp)
    points = _Points(
        names=names,
        starts=np.concatenate([[0], np.cumsum([len(e) for e in ends])]).astype(np.intp),
        closes=np.concatenate(pieces).astype(float),
        first=np.concatenate(first).astype(np.intp),
        ends=ends_all,
    )
    return points, empty


@dataclass(frozen=True)
class _OneStepAll:
    """``OneStep`` of every ticker at once: rows grouped as ``points``."""

    points: _Points
    actual: np.ndarray
    predicted: np.ndarray
    naive: np.ndarray
    spread: np.ndarray


def _one_step(predictor: Predictor, series: Mapping[str, SpanSeries]) -> _OneStepAll | None:
    """The one-step points of the validation span of every ticker, in one forward pass."""
    points, _ = _stack(predictor, series)
    if points is None:
        return None
    predicted, spread = predictor.predict_distribution(
        points.row_tickers(), points.windows(predictor.window), points.volatility(predictor)
    )
    return _OneStepAll(
        points, points.closes[points.ends], predicted, points.closes[points.ends - 1], spread
    )


def fit_damping(predictor: Predictor, series: Mapping[str, SpanSeries]) -> dict[str, float]:
    """Per ticker, the factor in ``DAMPING_GRID`` with the smallest one-step MAE on the
    validation span, shrinking predictions toward the last close (ties: the larger factor).

    The network's own predictions are used (any damping ``predictor`` has is ignored).
    """
    undamped = Predictor(predictor.window, predictor.scaler, predictor.params, predictor.networks)
    step = _one_step(undamped, series)
    if step is None:
        return {}
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
    errors = SpanErrors()
    step = _one_step(predictor, series)
    if step is None:
        return errors
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
    series: Mapping[str, SpanSeries], step: _OneStepAll, level: float, method: str
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
        ewma = ewma_volatility(points.closes, points.ends - 1, first=points.first)
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


def evaluate_model(job: ModelEvaluation) -> SpanErrors:
    """One-step errors of a saved model on the validation span.

    The networks are read as NumPy forward passes (``numpy_lstm``), as the
    forecast stage reads them: judging the champion imports no TensorFlow.

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
    return evaluate_span(predictor, job.series, job.level, job.intervals)


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


#: Central intervals every model calibrates besides its configured level: with the
#: median they give the fan chart's quantiles 5, 25, 50, 75 and 95 %.
FAN_CENTRAL_LEVELS = (0.5, 0.9)


def _level_key(level: float) -> str:
    return f"{round(float(level), 9):g}"


@dataclass(frozen=True)
class IntervalCalibration:
    """How one ticker's prediction intervals are drawn around its forecasts.

    The half-width of step ``h``, in log space, is ``m_c[h] * s[h]`` for a central
    interval of coverage ``c``: with ``method`` ``network``, ``s`` is the spread the
    distributional network predicts for the path (``Predictor.predict_paths``); with
    ``ewma``, the predicted scale (``pipeline.model.scale``: EWMA volatility at the
    origin times ``sqrt(h)``); ``m_c`` are then the normalised conformal multipliers.
    With ``static``, ``s`` is 1 and ``m_c`` the conformal half-widths themselves.
    Steps past the calibrated ones reuse the last multiplier (``network``, ``ewma``:
    the scale already grows with the step) or widen it by ``sqrt(h / calibrated)``
    (``static``, as a random walk's spread does).

    Attributes:
        method: ``network``, ``ewma`` or ``static``.
        multipliers: per central coverage, one multiplier per calibrated step.
        long_run: ``ewma``: the ticker's long-run volatility over the training span
            (``pipeline.model.scale.long_run_volatility``), part of its scale.
    """

    method: str
    multipliers: dict[float, list[float]]
    long_run: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The form stored in ``model_tickers.interval_q``."""
        return {
            "method": self.method,
            "multipliers": {_level_key(c): list(m) for c, m in sorted(self.multipliers.items())},
            "long_run": self.long_run,
        }

    def scales(
        self,
        closes: np.ndarray,
        origins: np.ndarray,
        spread: np.ndarray | None,
        horizon: int,
    ) -> np.ndarray | None:
        """The scale ``(n, horizon)`` of each forecast's steps, or None (``static``).

        Args:
            closes: the ticker's closes, oldest first.
            origins: positions in ``closes`` of each forecast's last close.
            spread: the network's predicted spreads ``(n, horizon)`` (``network``).
            horizon: steps.
        """
        if self.method == "static":
            return None
        if self.method == "network":
            if spread is None or not np.all(np.isfinite(spread)):
                raise ValueError("network intervals need the spread the network predicted")
            return np.asarray(spread, dtype=float)[:, :horizon]
        return step_scales(predicted_volatility(closes, origins, self.long_run), horizon)

    @classmethod
    def from_json(cls, value: Any, level: float) -> IntervalCalibration | None:
        """Read ``model_tickers.interval_q``; a plain list (models before the ``ewma``
        method) is the static half-widths of ``level``."""
        if not value:
            return None
        if isinstance(value, list):
            return cls("static", {float(level): [float(q) for q in value]})
        long_run = value.get("long_run")
        return cls(
            str(value["method"]),
            {float(c): [float(q) for q in m] for c, m in value["multipliers"].items()},
            None if long_run is None else float(long_run),
        )

    def covers(self, quantile_levels: tuple[float, ...]) -> bool:
        """Whether every quantile level's central interval was calibrated."""
        have = {_level_key(c) for c in self.multipliers}
        return all(
            abs(tau - 0.5) < 1e-12 or _level_key(abs(2.0 * tau - 1.0)) in have
            for tau in quantile_levels
        )

    def _factors(self, level: float, horizon: int) -> np.ndarray:
        known = next(
            (
                np.asarray(m, dtype=float)
                for c, m in self.multipliers.items()
                if _level_key(c) == _level_key(level)
            ),
            None,
        )
        if known is None:
            calibrated = sorted(self.multipliers)
            raise ValueError(
                f"no interval calibrated at coverage {level}; calibrated: {calibrated}"
            )
        steps = np.arange(1, horizon + 1)
        last = len(known)
        extra = known[-1] * (np.sqrt(steps / last) if self.method == "static" else 1.0)
        return np.where(steps <= last, known[np.minimum(steps, last) - 1], extra)

    def half_widths(self, level: float, scales: np.ndarray | None, horizon: int) -> np.ndarray:
        """Log half-widths ``(n, horizon)`` of the central interval of coverage ``level``.

        Args:
            level: the coverage, one of the calibrated ones.
            scales: per forecast and step, from ``scales`` (``(n, horizon)``); ignored
                by ``static``, which gives one row when it is None.
            horizon: steps.
        """
        factors = self._factors(level, horizon)[None, :]
        if self.method == "static":
            return factors if scales is None else np.repeat(factors, len(scales), 0)
        if scales is None:
            raise ValueError(f"{self.method} intervals need the scale of each forecast")
        return factors * np.asarray(scales, dtype=float)[:, :horizon]

    def quantiles(
        self, paths: np.ndarray, scales: np.ndarray | None, levels: tuple[float, ...]
    ) -> np.ndarray:
        """Price quantiles ``(n, horizon, len(levels))`` around forecast paths ``(n, horizon)``."""
        paths = np.asarray(paths, dtype=float)
        out = np.empty((*paths.shape, len(levels)))
        for index, tau in enumerate(levels):
            if abs(tau - 0.5) < 1e-12:
                out[..., index] = paths
                continue
            width = self.half_widths(abs(2.0 * tau - 1.0), scales, paths.shape[1])
            out[..., index] = paths * np.exp(np.sign(tau - 0.5) * width)
        return out


def calibrate_intervals(
    predictor: Predictor,
    series: Mapping[str, SpanSeries],
    horizon: int,
    level: float,
    method: str = "ewma",
) -> dict[str, IntervalCalibration | None]:
    """Per ticker, how its intervals of steps 1..``horizon`` are drawn (``IntervalCalibration``).

    From every validation origin with ``horizon`` closes after it, the
    predictor forecasts recursively; for each central coverage (``level`` and
    ``FAN_CENTRAL_LEVELS``) and step, the errors ``|log(actual / forecast)|``
    are calibrated as conformal scores: as they are (``static``,
    ``pipeline.scoring.intervals.fit_conformal``) or divided by the predicted
    scale (``network``: the network's spread of the path; ``ewma``: the EWMA
    scale; ``fit_normalised_conformal``). A ticker with too few origins for a
    level gets ``None`` (no intervals). Every ticker's paths come from one
    recursive forward pass, and the quantiles from one grouped sort.

    Raises:
        ValueError: a forecast or close is not positive and finite, or a network
            interval lacks the network's spread.
    """
    levels = sorted({float(level), *FAN_CENTRAL_LEVELS})
    points, empty = _stack(predictor, series, horizon)
    result: dict[str, IntervalCalibration | None] = dict.fromkeys(empty)
    if points is None:
        return dict(sorted(result.items()))
    paths, spread = predictor.predict_paths(
        points.row_tickers(),
        points.windows(predictor.window),
        horizon,
        points.volatility(predictor),
    )
    actual = _positive_matrix("y_true", points.following(horizon))
    paths = _positive_matrix("y_pred", paths)
    long_run = (
        np.array([long_run_volatility(series[name].training_closes) for name in points.names])
        if method == "ewma"
        else None
    )
    # The scales the calibrated intervals will be drawn with (None: static), as
    # ``IntervalCalibration.scales`` draws them.
    if method == "static":
        scores = np.abs(np.log(actual / paths))
    else:
        if method == "network":
            if not np.all(np.isfinite(spread)):
                raise ValueError("network intervals need the spread the network predicted")
            scale = np.asarray(spread, dtype=float)[:, :horizon]
        else:
            assert long_run is not None
            ewma = ewma_volatility(points.closes, points.ends - 1, first=points.first)
            sigma = np.sqrt(
                EWMA_WEIGHT * ewma**2 + (1.0 - EWMA_WEIGHT) * long_run[points.owner] ** 2
            )
            scale = step_scales(sigma, horizon)
        scores = np.abs(np.log(actual / paths)) / _positive_matrix("scale", scale)
    factors = {central: points.quantile(scores, central) for central in levels}
    for index, ticker in enumerate(points.names):
        multipliers = {central: [float(q) for q in factors[central][index]] for central in levels}
        finite = all(np.all(np.isfinite(m)) for m in multipliers.values())
        result[ticker] = (
            IntervalCalibration(
                method, multipliers, None if long_run is None else float(long_run[index])
            )
            if finite
            else None
        )
    return dict(sorted(result.items()))
