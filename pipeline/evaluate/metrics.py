"""Point and interval forecast metrics.

Every function takes array-likes of one common shape (any shape: a column of one
horizon step, or an ``(n, H)`` block scored as a whole) and refuses to guess:
mismatched shapes, empty inputs and NaN or infinite values raise ``ValueError``
rather than being dropped.
"""

from __future__ import annotations

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
    crossed = lower > upper
    if crossed.any():
        first = tuple(int(i) for i in np.argwhere(crossed)[0])
        raise ValueError(
            f"lower exceeds upper at {int(crossed.sum())} point(s), the first at index {first}"
        )
    return float(np.mean((lower <= y) & (y <= upper)))


def summarise(
    y: ArrayLike,
    yhat: ArrayLike,
    y_naive: ArrayLike,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> dict[str, Any]:
    """Every metric of one set of forecasts, ready to store or tabulate.

    Args:
        y: Observed values.
        yhat: The model's forecasts of the same points.
        y_naive: The naive forecasts of the same points (the MASE scale).
        lower: Lower interval bounds, or None when there is no interval.
        upper: Upper interval bounds, or None when there is no interval.

    Returns:
        A dict with ``n`` (number of points), ``mae``, ``rmse``, ``mape`` (percent),
        ``mase`` and ``coverage`` (None when no interval was given).

    Raises:
        ValueError: as the individual metrics, or only one of ``lower`` and ``upper``
            was given.
    """
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper for coverage, or neither")
    y, yhat, y_naive = _as_checked_arrays(y=y, yhat=yhat, y_naive=y_naive)
    return {
        "n": int(y.size),
        "mae": mae(y, yhat),
        "rmse": rmse(y, yhat),
        "mape": mape(y, yhat),
        "mase": mase(y, yhat, y_naive),
        "coverage": None if lower is None else coverage(y, lower, upper),
    }
