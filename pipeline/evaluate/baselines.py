"""Classical baselines that forecast ``horizon`` steps ahead from many origins at once.

Conventions shared by every baseline:

- ``history`` is one price series (1-D, oldest first) and ``origins[i]`` is the index
  of the last observed point of forecast ``i``; column ``h - 1`` of the result targets
  index ``origins[i] + h``. Targets may lie past the end of ``history``.
- No look-ahead: row ``i`` depends only on ``history[: origins[i] + 1]``.
- All baselines share one signature,
  ``forecast(history, origins, horizon, fit_start, fit_end)``, so a backtest can loop
  over ``BASELINES``. ``[fit_start, fit_end]`` is a fold's training span (inclusive);
  ``fit_end`` may not exceed any origin. A signature with both ends was chosen because
  the AR(1) needs a fixed span to be fitted once per fold, while the other two need no
  fitting: ``naive`` ignores the span, and ``drift`` estimates its slope from
  ``fit_start`` to each origin (the random-walk-with-drift forecast of a series that
  starts at ``fit_start``), so later origins of a fold use every point observed so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

#: The AR(1) coefficient is clipped to this magnitude so forecasts stay stationary.
MAX_ABS_PHI = 0.99
#: Lagged log returns spanning less than this are taken as constant: rounding in
#: ``log`` leaves differences near 1e-15, far below any real price move.
CONSTANT_RETURN_TOLERANCE = 1e-12


class Baseline(Protocol):
    """The signature every baseline in ``BASELINES`` accepts."""

    def __call__(
        self,
        history: ArrayLike,
        origins: ArrayLike,
        horizon: int,
        fit_start: int,
        fit_end: int | None,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class AR1Params:
    """An AR(1) on log returns: ``r_t = c + phi * r_{t-1} + e_t``."""

    c: float
    phi: float


def _checked_inputs(
    history: ArrayLike, origins: ArrayLike, horizon: int, fit_start: int, fit_end: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``history`` as floats and ``origins`` as integers, after checking the arguments.

    Raises:
        ValueError: the series is not 1-D or holds NaN or infinite values; origins are
            empty, not integers or out of range; the horizon is below 1; or the training
            span is out of range or ends after the first origin (look-ahead).
    """
    series = np.asarray(history, dtype=float)
    if series.ndim != 1:
        raise ValueError(f"history must be 1-D, got shape {series.shape}")
    bad = ~np.isfinite(series)
    if bad.any():
        raise ValueError(
            f"history has {int(bad.sum())} NaN or infinite value(s), the first at index "
            f"{int(np.argmax(bad))}; fill or drop them before forecasting"
        )
    starts = np.asarray(origins)
    if starts.ndim != 1 or starts.size == 0:
        raise ValueError(f"origins must be a non-empty 1-D array, got shape {starts.shape}")
    if not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(f"origins must be integer indices, got dtype {starts.dtype}")
    if starts.min() < 0 or starts.max() >= series.size:
        raise ValueError(
            f"origins must lie in [0, {series.size - 1}] for a history of {series.size} "
            f"points, got [{starts.min()}, {starts.max()}]"
        )
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
    if not 0 <= fit_start <= starts.min():
        raise ValueError(f"fit_start must lie in [0, first origin {starts.min()}], got {fit_start}")
    if fit_end is not None and not fit_start <= fit_end <= starts.min():
        raise ValueError(
            f"fit_end must lie in [fit_start {fit_start}, first origin {starts.min()}] so "
            f"that no origin's forecast is fitted on later data, got {fit_end}"
        )
    return series, starts.astype(np.intp)


def naive(
    history: ArrayLike,
    origins: ArrayLike,
    horizon: int,
    fit_start: int = 0,
    fit_end: int | None = None,
) -> np.ndarray:
    """The naive forecast: every step repeats the last observed value.

    Args:
        history: The price series, oldest first.
        origins: Index of the last observed point of each forecast.
        horizon: Number of steps ahead to forecast.
        fit_start: Start of the training span; checked but otherwise unused.
        fit_end: End of the training span; checked but otherwise unused.

    Returns:
        Array of shape ``(len(origins), horizon)``.

    Raises:
        ValueError: see the module conventions.
    """
    series, starts = _checked_inputs(history, origins, horizon, fit_start, fit_end)
    return np.repeat(series[starts][:, None], horizon, axis=1)


def drift(
    history: ArrayLike,
    origins: ArrayLike,
    horizon: int,
    fit_start: int = 0,
    fit_end: int | None = None,
) -> np.ndarray:
    """Random walk with drift: ``last + h * (last - first) / (n - 1)``.

    The drift is the average change over ``history[fit_start : origin + 1]``, so
    ``first = history[fit_start]`` and ``n - 1 = origin - fit_start``.

    Args:
        history: The price series, oldest first.
        origins: Index of the last observed point of each forecast; each must be after
            ``fit_start`` so the drift spans at least one change.
        horizon: Number of steps ahead to forecast.
        fit_start: First index of the span the drift is estimated from.
        fit_end: End of the fold's training span; checked but otherwise unused (the
            drift uses every point up to each origin).

    Returns:
        Array of shape ``(len(origins), horizon)``.

    Raises:
        ValueError: see the module conventions, or an origin equals ``fit_start``.
    """
    series, starts = _checked_inputs(history, origins, horizon, fit_start, fit_end)
    if starts.min() <= fit_start:
        raise ValueError(
            f"drift needs at least two points: every origin must be after fit_start "
            f"{fit_start}, got origin {starts.min()}"
        )
    last = series[starts]
    slope = (last - series[fit_start]) / (starts - fit_start)
    steps = np.arange(1, horizon + 1)
    return last[:, None] + slope[:, None] * steps[None, :]


def _log_returns(series: np.ndarray, first: int, last: int) -> np.ndarray:
    """Log returns ``log(p_t / p_{t-1})`` for ``t`` in ``(first, last]``.

    Raises:
        ValueError: a price in ``series[first : last + 1]`` is not positive.
    """
    prices = series[first : last + 1]
    if (prices <= 0).any():
        bad = first + int(np.argmax(prices <= 0))
        raise ValueError(f"log returns need positive prices, got {series[bad]} at index {bad}")
    return np.diff(np.log(prices))


def fit_ar1(history: ArrayLike, fit_start: int, fit_end: int) -> AR1Params:
    """Fit ``r_t = c + phi * r_{t-1} + e_t`` to the log returns of a training span.

    Ordinary least squares on the returns of ``history[fit_start : fit_end + 1]``
    only. ``phi`` is clipped to ``[-MAX_ABS_PHI, MAX_ABS_PHI]`` so the recursive
    forecast is stationary (it converges to the mean return instead of exploding);
    ``c`` is then set so the line still passes through the sample means, which is the
    OLS intercept whenever no clipping happened. If the lagged returns are all equal
    (their range is at most ``CONSTANT_RETURN_TOLERANCE``), ``phi`` is not identified:
    the fit falls back to ``phi = 0`` and ``c`` = the mean return (a constant-drift
    model).

    Args:
        history: The price series, oldest first; prices in the span must be positive.
        fit_start: First index of the training span.
        fit_end: Last index of the training span (inclusive).

    Returns:
        The fitted ``c`` and ``phi``.

    Raises:
        ValueError: the span is out of range, holds fewer than 4 prices (3 returns,
            2 regression pairs), or holds a non-positive price, NaN or infinity.
    """
    series = np.asarray(history, dtype=float)
    if series.ndim != 1:
        raise ValueError(f"history must be 1-D, got shape {series.shape}")
    if not (fit_start >= 0 and fit_end < series.size):
        raise ValueError(
            f"the training span [{fit_start}, {fit_end}] is outside a history of "
            f"{series.size} points"
        )
    if fit_end - fit_start < 3:
        raise ValueError(
            f"an AR(1) on log returns needs at least 4 prices in the training span, got "
            f"[{fit_start}, {fit_end}]"
        )
    span = series[fit_start : fit_end + 1]
    if not np.isfinite(span).all():
        raise ValueError(f"the training span [{fit_start}, {fit_end}] has NaN or infinite prices")
    returns = _log_returns(series, fit_start, fit_end)
    lagged, current = returns[:-1], returns[1:]
    if np.ptp(lagged) <= CONSTANT_RETURN_TOLERANCE:
        return AR1Params(c=float(returns.mean()), phi=0.0)
    spread = lagged - lagged.mean()
    phi = float(spread @ (current - current.mean())) / float(spread @ spread)
    phi = float(np.clip(phi, -MAX_ABS_PHI, MAX_ABS_PHI))
    return AR1Params(c=float(current.mean() - phi * lagged.mean()), phi=phi)


def ar1_log_returns(
    history: ArrayLike,
    origins: ArrayLike,
    horizon: int,
    fit_start: int,
    fit_end: int | None,
) -> np.ndarray:
    """AR(1) on log returns, fitted once on the training span, applied at every origin.

    The model is fitted by ``fit_ar1`` on ``history[fit_start : fit_end + 1]``. At
    each origin the last observed return ``r_o = log(p_o / p_{o-1})`` seeds the
    recursion ``r_{o+h} = c + phi * r_{o+h-1}`` for ``h = 1..horizon``, and the price
    forecast is ``p_o * exp(r_{o+1} + ... + r_{o+h})``. Because ``|phi| < 1`` the
    recursion is computed in closed form, ``mu + phi**h * (r_o - mu)`` with
    ``mu = c / (1 - phi)``.

    Args:
        history: The price series, oldest first; prices used must be positive.
        origins: Index of the last observed point of each forecast.
        horizon: Number of steps ahead to forecast.
        fit_start: First index of the training span.
        fit_end: Last index of the training span; required, and at most the first
            origin.

    Returns:
        Array of shape ``(len(origins), horizon)``.

    Raises:
        ValueError: see the module conventions and ``fit_ar1``, or ``fit_end`` is None.
    """
    series, starts = _checked_inputs(history, origins, horizon, fit_start, fit_end)
    if fit_end is None:
        raise ValueError("ar1_log_returns needs fit_end: the last index of its training span")
    params = fit_ar1(series, fit_start, fit_end)
    # Validates positivity up to the last origin; the first origin is >= fit_start + 3.
    _log_returns(series, fit_start, int(starts.max()))
    last = series[starts]
    last_return = np.log(last) - np.log(series[starts - 1])
    mean_return = params.c / (1.0 - params.phi)
    steps = np.arange(1, horizon + 1)
    returns = mean_return + params.phi ** steps[None, :] * (last_return - mean_return)[:, None]
    return last[:, None] * np.exp(np.cumsum(returns, axis=1))


BASELINES: dict[str, Baseline] = {
    "naive": naive,
    "drift": drift,
    "ar1_log_returns": ar1_log_returns,
}


def get_baseline(name: str) -> Baseline:
    """The baseline called ``name``.

    Raises:
        ValueError: no baseline has that name.
    """
    try:
        return BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}") from None
