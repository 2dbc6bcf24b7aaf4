"""Split-conformal prediction intervals, multiplicative and one per horizon step.

Prices are positive and their errors grow with the price level, so the
nonconformity score is the absolute log ratio ``|log(y_true / y_pred)|`` and the
interval is ``[y_pred * exp(-q), y_pred * exp(q)]``, a symmetric band in log space.
Calibrate ``q`` on forecasts the model was not trained on (for example a
validation fold); then, for exchangeable data, a fresh point falls inside its
interval with probability at least ``level``.

**Normalised scores.** A static ``q`` gives the same width in a calm month and in
a crash. With a predicted scale ``s`` per point (the standard deviation of the
log return to the target, e.g. from recent volatility), the score is
``|log(y_true / y_pred)| / s`` and the interval ``y_pred * exp(-+ m * s)``: the
calibrated multiplier ``m`` keeps the finite-sample guarantee while the width
follows ``s`` (Lei et al. 2018, "locally weighted" conformal).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike


def _positive_matrix(name: str, values: ArrayLike) -> np.ndarray:
    """``values`` as a 2-D float array of positive finite numbers.

    Raises:
        ValueError: the array is not 2-D with at least one row, or a value is NaN,
            infinite, zero or negative.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D array (points, horizon steps), got shape {array.shape}"
        )
    bad = ~(np.isfinite(array) & (array > 0))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be positive and finite: {int(bad.sum())} value(s) are not, the "
            f"first {array[first]} at index {first}"
        )
    return array


def conformal_rank(n: int, level: float) -> int:
    """The 1-based rank of the calibration score used as the quantile.

    ``ceil((n + 1) * level)``, the finite-sample corrected rank. The product is
    rounded to 9 decimals first so that float noise (``(n + 1) * level`` landing
    just above an integer) cannot push the rank up by one.

    Args:
        n: Number of calibration points.
        level: Target coverage, strictly between 0 and 1.

    Returns:
        The rank ``k``; when ``k > n`` no calibration score is large enough and the
        interval must be infinite.
    """
    return math.ceil(round((n + 1) * level, 9))


def fit_conformal(y_true: ArrayLike, y_pred: ArrayLike, level: float) -> np.ndarray:
    """Per-step quantiles of the multiplicative calibration errors.

    For each horizon step ``h`` the scores ``|log(y_true[:, h] / y_pred[:, h])|`` are
    sorted and the ``k``-th smallest is returned, ``k = ceil((n + 1) * level)``: the
    empirical quantile at ``k / n`` taken as an order statistic, never interpolated.
    (This is NumPy's ``method="inverted_cdf"``. ``np.quantile(s, k / n,
    method="higher")`` is not the same: for ``k < n`` it returns the ``k + 1``-th
    smallest score, a wider interval than the rule requires.)

    When ``k > n``, i.e. ``(n + 1) * level > n``, there are too few calibration points
    to guarantee the level and every step's quantile is ``inf`` (an unbounded
    interval), rather than silently under-covering.

    Args:
        y_true: Observed prices, shape ``(n, H)``.
        y_pred: Forecasts of the same points, shape ``(n, H)``.
        level: Target coverage, strictly between 0 and 1 (e.g. 0.9).

    Returns:
        Array of shape ``(H,)``: the log-space half-width for each step.

    Raises:
        ValueError: ``level`` is not in (0, 1), the shapes differ or are not 2-D, or a
            price is not positive and finite.
    """
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    observed = _positive_matrix("y_true", y_true)
    predicted = _positive_matrix("y_pred", y_pred)
    if observed.shape != predicted.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got {observed.shape} and "
            f"{predicted.shape}"
        )
    return conformal_quantile(np.abs(np.log(observed / predicted)), level)


def conformal_quantile(scores: ArrayLike, level: float) -> np.ndarray:
    """Per column, the ``ceil((n + 1) * level)``-th smallest score (``inf`` if ``k > n``).

    Args:
        scores: Non-negative nonconformity scores, shape ``(n, H)``.
        level: Target coverage, strictly between 0 and 1.

    Returns:
        Array of shape ``(H,)``.
    """
    values = np.asarray(scores, dtype=float)
    n, steps = values.shape
    rank = conformal_rank(n, level)
    if rank > n:
        return np.full(steps, np.inf)
    return np.sort(values, axis=0)[rank - 1]


def _checked_level(level: float) -> None:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")


def fit_normalised_conformal(
    y_true: ArrayLike, y_pred: ArrayLike, scale: ArrayLike, level: float
) -> np.ndarray:
    """Per-step multipliers of the predicted scale: conformal quantiles of normalised scores.

    The score of a point is ``|log(y_true / y_pred)| / scale``; the multiplier of
    step ``h`` is the ``ceil((n + 1) * level)``-th smallest score of that step, as in
    ``fit_conformal`` (``inf`` when there are too few points for the level).

    Args:
        y_true: Observed prices, shape ``(n, H)``.
        y_pred: Forecasts of the same points, shape ``(n, H)``.
        scale: Predicted standard deviations of ``log(y_true / last close)``,
            shape ``(n, H)``, positive.
        level: Target coverage, strictly between 0 and 1.

    Returns:
        Array of shape ``(H,)``: the multipliers ``m_h``.

    Raises:
        ValueError: ``level`` is not in (0, 1), the shapes differ or are not 2-D, or
            a price or scale is not positive and finite.
    """
    _checked_level(level)
    observed = _positive_matrix("y_true", y_true)
    predicted = _positive_matrix("y_pred", y_pred)
    scales = _positive_matrix("scale", scale)
    if not observed.shape == predicted.shape == scales.shape:
        raise ValueError(
            f"y_true, y_pred and scale must have the same shape, got {observed.shape}, "
            f"{predicted.shape} and {scales.shape}"
        )
    return conformal_quantile(np.abs(np.log(observed / predicted)) / scales, level)


def apply_conformal(y_pred: ArrayLike, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative intervals around forecasts: ``y_pred * exp(-q)`` to ``y_pred * exp(q)``.

    Args:
        y_pred: Forecasts, shape ``(m, H)``.
        q: Per-step log half-widths from ``fit_conformal``, shape ``(H,)``; may be
            ``inf`` (giving bounds 0 and ``inf``).

    Returns:
        ``(lower, upper)``, each of shape ``(m, H)``.

    Raises:
        ValueError: ``y_pred`` is not 2-D positive and finite, or ``q`` does not have
            one non-negative, non-NaN value per column of ``y_pred``.
    """
    predicted = _positive_matrix("y_pred", y_pred)
    half_widths = np.asarray(q, dtype=float)
    if half_widths.shape != (predicted.shape[1],):
        raise ValueError(
            f"q must have one value per horizon step, shape ({predicted.shape[1]},), got "
            f"{half_widths.shape}"
        )
    if np.isnan(half_widths).any() or (half_widths < 0).any():
        raise ValueError(f"q must be non-negative and not NaN, got {half_widths}")
    return predicted * np.exp(-half_widths), predicted * np.exp(half_widths)
