"""Point, interval and quantile forecast metrics.

Every function takes array-likes of one common shape (any shape: a column of one
horizon step, or an ``(n, H)`` block scored as a whole) and refuses to guess:
mismatched shapes, empty inputs and NaN or infinite values raise ``ValueError``
rather than being dropped.

Interval and quantile scores are *scaled* where they are pooled across series:
each point's score is divided by its series' scale, the mean absolute daily
change of the training span it was forecast from (``naive_scale``), as the M4
competition's MSIS and the M5 competition's scaled pinball loss do. A scaled
score of 1 is an error of one typical day's move.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def _as_checked_arrays(**arrays: ArrayLike) -> list[np.ndarray]:
    """The named inputs as float arrays, after checking they can be scored together.

    Raises:
        ValueError: the shapes differ, the inputs are empty, or a value is NaN or infinite.
    """
    converted = {name: np.asarray(values, dtype=float) for name, values in arrays.items()}
    shapes = {name: values.shape for name, values in converted.items()}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"inputs must have the same shape, got {described}")
    for name, values in converted.items():
        if values.size == 0:
            raise ValueError(f"{name} is empty: there is nothing to score")
        bad = ~np.isfinite(values)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN or infinite value(s), the first at index "
                f"{first}; drop those points from every input before scoring"
            )
    return list(converted.values())


def mae(y: ArrayLike, yhat: ArrayLike) -> float:
    """Mean absolute error.

    Args:
        y: Observed values.
        yhat: Forecasts of the same points, same shape as ``y``.

    Returns:
        ``mean(|y - yhat|)``.

    Raises:
        ValueError: shapes differ, inputs are empty, or a value is NaN or infinite.
    """
    y, yhat = _as_checked_arrays(y=y, yhat=yhat)
    return float(np.mean(np.abs(y - yhat)))


def rmse(y: ArrayLike, yhat: ArrayLike) -> float:
    """Root mean squared error.

    Args:
        y: Observed values.
        yhat: Forecasts of the same points, same shape as ``y``.

    Returns:
        ``sqrt(mean((y - yhat) ** 2))``.

    Raises:
        ValueError: shapes differ, inputs are empty, or a value is NaN or infinite.
    """
    y, yhat = _as_checked_arrays(y=y, yhat=yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def mape(y: ArrayLike, yhat: ArrayLike) -> float:
    """Mean absolute percentage error, in percent.

    Args:
        y: Observed values; none may be zero.
        yhat: Forecasts of the same points, same shape as ``y``.

    Returns:
        ``100 * mean(|y - yhat| / |y|)``, so 2.5 means 2.5 %.

    Raises:
        ValueError: shapes differ, inputs are empty, a value is NaN or infinite, or an
            observed value is zero (the percentage error is undefined there).
    """
    y, yhat = _as_checked_arrays(y=y, yhat=yhat)
    zeros = y == 0
    if zeros.any():
        first = tuple(int(i) for i in np.argwhere(zeros)[0])
        raise ValueError(
            f"MAPE is undefined where y is zero ({int(zeros.sum())} point(s), the first at "
            f"index {first}); use mae or mase for such series"
        )
    return float(100.0 * np.mean(np.abs(y - yhat) / np.abs(y)))


def mase(y: ArrayLike, yhat: ArrayLike, y_naive: ArrayLike) -> float:
    """Mean absolute scaled error against the naive forecast on the same points.

    MASE here always means the model's mean absolute error divided by the naive
    forecast's on the same test points and horizon step, so that the naive forecast
    scores exactly 1.00. It is not Hyndman's in-sample scaled error: the scale is the
    naive forecast's out-of-sample error on the very points being scored. Below 1 the
    model beats the naive forecast; above 1 it loses to it.

    Args:
        y: Observed values.
        yhat: The model's forecasts of the same points.
        y_naive: The naive forecasts of the same points, made from the same origins
            for the same horizon step.

    Returns:
        ``mae(y, yhat) / mae(y, y_naive)``, or NaN when the naive forecast is exact on
        every point (its MAE is 0, so no ratio exists).

    Raises:
        ValueError: shapes differ, inputs are empty, or a value is NaN or infinite.
    """
    y, yhat, y_naive = _as_checked_arrays(y=y, yhat=yhat, y_naive=y_naive)
    naive_error = float(np.mean(np.abs(y - y_naive)))
    if naive_error == 0.0:
        return float("nan")
    return float(np.mean(np.abs(y - yhat))) / naive_error


def coverage(y: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of points inside their prediction interval, bounds included.

    Args:
        y: Observed values.
        lower: Lower bounds, same shape as ``y``.
        upper: Upper bounds, same shape as ``y``.

    Returns:
        The fraction of points with ``lower <= y <= upper``, between 0 and 1.

    Raises:
        ValueError: shapes differ, inputs are empty, a value is NaN or infinite, or a
            lower bound exceeds its upper bound.
    """
    y, lower, upper = _as_checked_arrays(y=y, lower=lower, upper=upper)
    _refuse_crossed(lower, upper)
    return float(np.mean((lower <= y) & (y <= upper)))


def _checked_level(level: float) -> float:
    if isinstance(level, bool) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    return float(level)


def _checked_scale(scale: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    (values,) = _as_checked_arrays(scale=np.broadcast_to(np.asarray(scale, dtype=float), shape))
    if (values <= 0).any():
        raise ValueError(
            f"scale must be positive: {int((values <= 0).sum())} value(s) are not (a "
            "training span without any price change cannot scale an error)"
        )
    return values


def naive_scale(history: ArrayLike) -> float:
    """The scale of scaled scores: the mean absolute daily change of a training span.

    Args:
        history: The training span's prices, oldest first (at least two).

    Returns:
        ``mean(|history[t] - history[t - 1]|)``, the in-sample MAE of the naive
        forecast, the denominator of the M4 competition's MASE and MSIS.

    Raises:
        ValueError: fewer than two prices, or a price is NaN or infinite.
    """
    (series,) = _as_checked_arrays(history=history)
    if series.ndim != 1 or series.size < 2:
        raise ValueError(f"the scale needs a 1-D span of at least 2 prices, got {series.shape}")
    return float(np.mean(np.abs(np.diff(series))))


def interval_scores(y: ArrayLike, lower: ArrayLike, upper: ArrayLike, level: float) -> np.ndarray:
    """The interval score of each point (Gneiting and Raftery 2007), in price units.

    ``(upper - lower) + 2 / alpha * (lower - y) * [y < lower]
    + 2 / alpha * (y - upper) * [y > upper]`` with ``alpha = 1 - level``: the width,
    plus a penalty for a miss that grows with its distance from the interval. It is
    lowest, in expectation, for the true ``alpha / 2`` and ``1 - alpha / 2`` quantiles.

    Args:
        y: Observed values.
        lower: Lower bounds, same shape as ``y``.
        upper: Upper bounds, same shape as ``y``.
        level: The interval's nominal coverage, e.g. 0.9.

    Returns:
        An array of the shape of ``y``.

    Raises:
        ValueError: shapes differ, inputs are empty, a value is NaN or infinite, a
            lower bound exceeds its upper bound, or ``level`` is not in (0, 1).
    """
    alpha = 1.0 - _checked_level(level)
    y, lower, upper = _as_checked_arrays(y=y, lower=lower, upper=upper)
    _refuse_crossed(lower, upper)
    below = np.clip(lower - y, 0.0, None)
    above = np.clip(y - upper, 0.0, None)
    return (upper - lower) + (2.0 / alpha) * (below + above)


def interval_score(y: ArrayLike, lower: ArrayLike, upper: ArrayLike, level: float) -> float:
    """The mean interval score (``interval_scores``), in price units."""
    return float(np.mean(interval_scores(y, lower, upper, level)))


def msis(y: ArrayLike, lower: ArrayLike, upper: ArrayLike, level: float, scale: ArrayLike) -> float:
    """Mean scaled interval score (the M4 competition's MSIS): lower is better.

    Args:
        y: Observed values.
        lower: Lower bounds, same shape as ``y``.
        upper: Upper bounds, same shape as ``y``.
        level: The interval's nominal coverage (M4: 0.95; here usually 0.9).
        scale: Each point's scale (``naive_scale`` of its training span): one
            number, or one per point.

    Returns:
        ``mean(interval_score_i / scale_i)``.

    Raises:
        ValueError: as ``interval_scores``, or a scale is not positive.
    """
    scores = interval_scores(y, lower, upper, level)
    return float(np.mean(scores / _checked_scale(scale, scores.shape)))


def pinball_loss(y: ArrayLike, quantile: ArrayLike, level: float) -> float:
    """Mean pinball (quantile) loss of forecasts of the ``level`` quantile, in price units.

    ``level * (y - q)`` where ``y >= q``, ``(1 - level) * (q - y)`` where ``y < q``;
    lowest, in expectation, for the true quantile. At level 0.5 it is half the MAE.

    Raises:
        ValueError: shapes differ, inputs are empty, a value is NaN or infinite, or
            ``level`` is not in (0, 1).
    """
    tau = _checked_level(level)
    y, quantile = _as_checked_arrays(y=y, quantile=quantile)
    error = y - quantile
    return float(np.mean(np.maximum(tau * error, (tau - 1.0) * error)))


def scaled_pinball_loss(y: ArrayLike, quantile: ArrayLike, level: float, scale: ArrayLike) -> float:
    """Mean pinball loss with each point divided by its scale (the M5 competition's SPL).

    Raises:
        ValueError: as ``pinball_loss``, or a scale is not positive.
    """
    tau = _checked_level(level)
    y, quantile = _as_checked_arrays(y=y, quantile=quantile)
    error = y - quantile
    losses = np.maximum(tau * error, (tau - 1.0) * error)
    return float(np.mean(losses / _checked_scale(scale, losses.shape)))


def relative_width(lower: ArrayLike, upper: ArrayLike, price: ArrayLike) -> float:
    """Mean interval width relative to a price (e.g. the last close at the origin).

    Raises:
        ValueError: shapes differ, inputs are empty, a value is NaN or infinite, a
            lower bound exceeds its upper bound, or a price is not positive.
    """
    lower, upper, price = _as_checked_arrays(lower=lower, upper=upper, price=price)
    _refuse_crossed(lower, upper)
    if (price <= 0).any():
        raise ValueError("relative width needs positive prices")
    return float(np.mean((upper - lower) / price))


def _refuse_crossed(lower: np.ndarray, upper: np.ndarray) -> None:
    crossed = lower > upper
    if crossed.any():
        first = tuple(int(i) for i in np.argwhere(crossed)[0])
        raise ValueError(
            f"lower exceeds upper at {int(crossed.sum())} point(s), the first at index {first}"
        )


def quantile_name(level: float) -> str:
    """The column of a quantile level in points and metrics: 0.05 is ``q05``, 0.5 ``q50``."""
    percent = round(float(level) * 100, 6)
    if percent == int(percent):
        return f"q{int(percent):02d}"
    return "q" + f"{percent:g}".replace(".", "_")


#: Metrics of the prediction interval (None where a model has none), in table order.
INTERVAL_METRICS = ("coverage", "coverage_high_vol", "width", "interval_score", "msis")


def summarise(
    y: ArrayLike,
    yhat: ArrayLike,
    y_naive: ArrayLike,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    *,
    level: float | None = None,
    scale: ArrayLike | None = None,
    quantiles: Mapping[float, ArrayLike] | None = None,
    high_vol: ArrayLike | None = None,
) -> dict[str, Any]:
    """Every metric of one set of forecasts, ready to store or tabulate.

    Args:
        y: Observed values.
        yhat: The model's forecasts of the same points.
        y_naive: The naive forecasts of the same points (the MASE scale, and the
            price the interval's relative width is measured against).
        lower: Lower interval bounds, or None when there is no interval.
        upper: Upper interval bounds, or None when there is no interval.
        level: The interval's nominal coverage (needed for the interval score).
        scale: Each point's scale for the scaled scores (``naive_scale`` of its
            training span); without it MSIS and the scaled pinball losses are None.
        quantiles: Forecast quantiles by level, e.g. ``{0.05: ..., 0.5: ...}``.
        high_vol: Flags of the points in their series' most volatile test days;
            ``coverage_high_vol`` is the coverage on those alone.

    Returns:
        A dict with ``n`` (number of points), ``mae``, ``rmse``, ``mape`` (percent),
        ``mase``; the interval's ``coverage``, ``coverage_high_vol`` (and
        ``n_high_vol``), ``width`` (mean width relative to ``y_naive``),
        ``interval_score`` (price units) and ``msis`` (all None without an
        interval); ``spl`` (the mean scaled pinball loss over the quantiles) and
        ``spl_q05`` .. per quantile (``quantile_name``), None without quantiles.

    Raises:
        ValueError: as the individual metrics, only one of ``lower`` and ``upper``
            was given, or an interval without its ``level``.
    """
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper for coverage, or neither")
    if lower is not None and level is None:
        raise ValueError("give the interval's level to score it")
    y, yhat, y_naive = _as_checked_arrays(y=y, yhat=yhat, y_naive=y_naive)
    row: dict[str, Any] = {
        "n": int(y.size),
        "mae": mae(y, yhat),
        "rmse": rmse(y, yhat),
        "mape": mape(y, yhat),
        "mase": mase(y, yhat, y_naive),
        **dict.fromkeys(INTERVAL_METRICS),
        "n_high_vol": None,
        "spl": None,
    }
    flags = None if high_vol is None else np.asarray(high_vol, dtype=bool)
    if flags is not None:
        row["n_high_vol"] = int(flags.sum())
    if lower is not None and level is not None:
        low, high = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        row["coverage"] = coverage(y, low, high)
        if flags is not None and flags.any():
            row["coverage_high_vol"] = coverage(y[flags], low[flags], high[flags])
        row["width"] = relative_width(low, high, y_naive)
        row["interval_score"] = interval_score(y, low, high, level)
        if scale is not None:
            row["msis"] = msis(y, low, high, level, scale)
    if quantiles and scale is not None:
        losses = {
            f"spl_{quantile_name(tau)}": scaled_pinball_loss(y, values, tau, scale)
            for tau, values in sorted(quantiles.items())
        }
        row.update(losses)
        row["spl"] = float(np.mean(list(losses.values())))
    return row
