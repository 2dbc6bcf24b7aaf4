"""Interval baselines: the distributional forecasts a risk analyst compares a model against.

Each baseline turns one price series into a ``DistributionForecast`` for many origins
at once: a point forecast, the standard deviation of the ``h``-step log return
``log(p[o + h] / p[o])`` and price quantiles at ``levels``. They follow the
conventions of ``pipeline.evaluate.baselines``:

- ``history`` is one price series (1-D, oldest first) and ``origins[i]`` is the index
  of the last observed price of forecast ``i``; column ``h - 1`` targets index
  ``origins[i] + h``.
- No look-ahead: row ``i`` depends only on ``history[: origins[i] + 1]``.
- ``[fit_start, fit_end]`` is the fold's training span (inclusive); here ``fit_end``
  is required and may not exceed any origin.

The three baselines are ``naive_quantile`` (static empirical quantiles of the
training span's ``h``-step returns), ``naive_ewma`` (RiskMetrics, lambda 0.94, normal
quantiles) and ``naive_garch`` (GARCH(1,1) with Student-t innovations from ``arch``,
fitted once per fold, falling back to the EWMA when the fit is unusable). The point
forecast of all three is the naive one, the last close: they differ in the spread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from pipeline.evaluate.baselines import _checked_inputs, _log_returns

logger = logging.getLogger(__name__)

#: The quantile levels every distributional forecast emits (the fan chart's and the
#: 90 % interval's bounds).
QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The RiskMetrics (J.P. Morgan, 1996) decay for daily data.
RISKMETRICS_LAMBDA = 0.94
#: Fewer training returns than this and ``naive_garch`` does not fit, it uses the EWMA.
MIN_GARCH_RETURNS = 30
#: The baselines other than GARCH need at least this many training returns.
MIN_TRAINING_RETURNS = 2
#: A fitted persistence ``alpha + beta`` up to this far above 1 is rounding at the bound.
PERSISTENCE_TOLERANCE = 1e-6
#: Log returns are multiplied by this before ``arch`` sees them (percent returns), so
#: the optimiser works on numbers near 1; variances are divided by its square after.
GARCH_RETURN_SCALE = 100.0


@dataclass(frozen=True)
class DistributionForecast:
    """Point forecasts, log-return scales and price quantiles for ``n`` origins.

    Attributes:
        yhat: ``(n, H)`` point forecast in price units (the median / location).
        scale: ``(n, H)`` standard deviation of the forecast of
            ``log(price[o + h] / price[o])``.
        quantiles: ``(n, H, len(levels))`` price quantiles, non-decreasing along the
            last axis.
        levels: The quantile levels, strictly increasing, each in ``(0, 1)``.
    """

    yhat: np.ndarray
    scale: np.ndarray
    quantiles: np.ndarray
    levels: tuple[float, ...]

    def __post_init__(self) -> None:
        """Check that the arrays' shapes agree with each other and with ``levels``.

        Raises:
            ValueError: ``yhat`` is not 2-D, or ``scale`` or ``quantiles`` has another
                shape than ``yhat`` (plus one axis of ``len(levels)`` for quantiles).
        """
        if self.yhat.ndim != 2:
            raise ValueError(f"yhat must be 2-D (origins, horizon), got shape {self.yhat.shape}")
        if self.scale.shape != self.yhat.shape:
            raise ValueError(
                f"scale must have yhat's shape {self.yhat.shape}, got {self.scale.shape}"
            )
        expected = (*self.yhat.shape, len(self.levels))
        if self.quantiles.shape != expected:
            raise ValueError(
                f"quantiles must have shape {expected} (origins, horizon, levels), got "
                f"{self.quantiles.shape}"
            )


class IntervalBaseline(Protocol):
    """The signature every baseline in ``INTERVAL_BASELINES`` accepts."""

    def __call__(
        self,
        history: ArrayLike,
        origins: ArrayLike,
        horizon: int,
        fit_start: int,
        fit_end: int | None,
        levels: Sequence[float] = QUANTILE_LEVELS,
    ) -> DistributionForecast: ...


@dataclass(frozen=True)
class GarchFit:
    """A GARCH(1,1) with standardised Student-t innovations, in daily log-return units.

    The per-day variance follows ``s[t + 1] = omega + alpha * r[t]**2 + beta * s[t]``.

    Attributes:
        omega: Variance intercept, in squared log-return units (not percent).
        alpha: Weight of the last squared return.
        beta: Weight of the last variance.
        nu: Degrees of freedom of the Student-t innovations (above 2).
        last_variance: ``arch``'s conditional variance of the training span's last
            return, ``s[fit_end]``, from which the filter continues.
    """

    omega: float
    alpha: float
    beta: float
    nu: float
    last_variance: float


class GarchFitError(ValueError):
    """The GARCH fit failed or gave parameters that cannot be used; the message says why."""


def _checked_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """``levels`` as a tuple of floats, after checking them.

    Raises:
        ValueError: the levels are empty, not 1-D, outside ``(0, 1)``, or not strictly
            increasing (unsorted or duplicated).
    """
    array = np.asarray(levels, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"levels must be a non-empty sequence of numbers, got {levels!r}")
    if not (np.isfinite(array).all() and (array > 0).all() and (array < 1).all()):
        raise ValueError(f"every quantile level must lie strictly between 0 and 1, got {levels!r}")
    if (np.diff(array) <= 0).any():
        raise ValueError(
            f"quantile levels must be strictly increasing (sorted, no duplicates), got {levels!r}"
        )
    return tuple(float(level) for level in array)


def _checked_span(
    history: ArrayLike,
    origins: ArrayLike,
    horizon: int,
    fit_start: int,
    fit_end: int | None,
    name: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The series, the origins and ``fit_end``, after the shared checks.

    Also checks that every price from ``fit_start`` to the last origin is positive
    and that the training span holds at least ``MIN_TRAINING_RETURNS`` returns.

    Raises:
        ValueError: see ``baselines._checked_inputs``; or ``fit_end`` is None; or the
            span is too short; or a price is not positive.
    """
    series, starts = _checked_inputs(history, origins, horizon, fit_start, fit_end)
    if fit_end is None:
        raise ValueError(f"{name} needs fit_end: the last index of its training span")
    if fit_end - fit_start < MIN_TRAINING_RETURNS:
        raise ValueError(
            f"{name} needs at least {MIN_TRAINING_RETURNS} log returns in the training span, "
            f"i.e. {MIN_TRAINING_RETURNS + 1} prices; [{fit_start}, {fit_end}] has "
            f"{fit_end - fit_start + 1}"
        )
    _log_returns(series, fit_start, int(starts.max()))
    return series, starts, int(fit_end)


def _price_quantiles(last: np.ndarray, scale: np.ndarray, shape_ppf: np.ndarray) -> np.ndarray:
    """``last * exp(scale * q)`` for each standardised quantile ``q``: shape ``(n, H, L)``."""
    return last[:, None, None] * np.exp(scale[:, :, None] * shape_ppf[None, None, :])


def _normal_quantiles(levels: Sequence[float]) -> np.ndarray:
    """The standard normal's quantiles at ``levels`` (the standard library's, which
    spares every command the import of ``scipy.special``)."""
    normal = NormalDist()
    return np.array([normal.inv_cdf(level) for level in levels])


def ewma_variance(
    returns: ArrayLike, lam: float = RISKMETRICS_LAMBDA, initial: float | None = None
) -> np.ndarray:
    """The RiskMetrics EWMA variance forecasts of a return series.

    ``v[t + 1] = lam * v[t] + (1 - lam) * returns[t]**2`` (zero mean), so element ``t``
    is the variance forecast for ``returns[t]`` made from ``returns[:t]`` only. The
    recursion is linear, so it runs as one ``scipy.signal.lfilter`` call (exact up to
    floating-point rounding).

    Without ``initial`` there is nothing to forecast ``returns[0]`` from: ``v[0]`` is
    NaN and the recursion is seeded with the first squared return, ``v[1] =
    returns[0]**2`` (as if ``v[0]`` had been ``returns[0]**2``). Nothing looks ahead,
    but the first forecasts rest on a single observation; the baselines pass the
    training span's mean squared return as ``initial`` instead.

    Args:
        returns: 1-D log returns, oldest first.
        lam: Decay, strictly between 0 and 1.
        initial: The variance forecast for ``returns[0]``; non-negative.

    Returns:
        Array of ``len(returns) + 1`` variances; the last one forecasts the return after
        the series.

    Raises:
        ValueError: ``returns`` is not 1-D or holds NaN or infinity; ``lam`` is outside
            ``(0, 1)``; ``initial`` is negative or not finite; or ``returns`` is empty
            and no ``initial`` was given.
    """
    values = np.asarray(returns, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"returns must be 1-D, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("returns hold NaN or infinite values; drop them before filtering")
    if not 0 < lam < 1:
        raise ValueError(f"the EWMA decay lam must lie strictly between 0 and 1, got {lam}")
    if initial is not None and not (np.isfinite(initial) and initial >= 0):
        raise ValueError(f"the initial variance must be finite and non-negative, got {initial}")
    if initial is None and values.size == 0:
        raise ValueError("ewma_variance needs at least one return or an initial variance")
    seed = values[0] ** 2 if initial is None else float(initial)
    from scipy import signal  # 1 to 2 s to import: only where used (benchmarks/startup.py)

    filtered, _ = signal.lfilter([1.0 - lam], [1.0, -lam], values**2, zi=np.array([lam * seed]))
    first = np.nan if initial is None else seed
    return np.concatenate(([first], filtered))


def ewma_scale_at(
    closes: ArrayLike,
    origins: ArrayLike,
    fit_start: int,
    fit_end: int,
    lam: float = RISKMETRICS_LAMBDA,
) -> np.ndarray:
    """The EWMA one-day volatility (std of the next daily log return) at each origin.

    The variance starts at the mean squared daily log return of
    ``closes[fit_start : fit_end + 1]`` and is filtered through every return from
    ``r[fit_start + 1]`` to ``r[o] = log(closes[o] / closes[o - 1])``, so origin ``o``
    uses ``closes[fit_start : o + 1]`` only (``fit_end`` may not exceed any origin).

    Args:
        closes: The price series, oldest first; prices from ``fit_start`` to the last
            origin must be positive.
        origins: Index of the last observed price of each forecast.
        fit_start: First index of the training span.
        fit_end: Last index of the training span (inclusive).
        lam: EWMA decay, strictly between 0 and 1.

    Returns:
        Array of shape ``(len(origins),)``.

    Raises:
        ValueError: see the module conventions; or the training span has fewer than
            ``MIN_TRAINING_RETURNS`` returns; or a price is not positive.
    """
    series, starts, fit_end = _checked_span(closes, origins, 1, fit_start, fit_end, "ewma_scale_at")
    training = _log_returns(series, fit_start, fit_end)
    returns = _log_returns(series, fit_start, int(starts.max()))
    variances = ewma_variance(returns, lam, initial=float(np.mean(training**2)))
    # variances[k] forecasts the return ending at price fit_start + k + 1, from the
    # returns ending at or before fit_start + k: the origin o = fit_start + k.
    return np.sqrt(variances[starts - fit_start])


def naive_quantile(
    history: ArrayLike,
    origins: ArrayLike,
    horizon: int,
    fit_start: int,
    fit_end: int | None,
    levels: Sequence[float] = QUANTILE_LEVELS,
) -> DistributionForecast:
    """Static empirical quantiles of the training span's ``h``-step log returns.

    For each step ``h`` the sample is every ``log(p[t + h] / p[t])`` with ``t`` and
    ``t + h`` inside ``[fit_start, fit_end]`` (overlapping windows). The price quantile
    is ``p[o] * exp(q_h(level))``, where ``q_h`` is NumPy's ``np.quantile(...,
    method="linear")`` (type 7: linear interpolation between order statistics); the
    point forecast is the naive one (the last close: only the spread is the
    baseline's), and ``scale`` is the sample standard deviation (``ddof=1``). Only
    the last close depends on the origin.

    Args:
        history: The price series, oldest first.
        origins: Index of the last observed price of each forecast.
        horizon: Number of steps ahead to forecast.
        fit_start: First index of the training span.
        fit_end: Last index of the training span; required, at most the first origin.
        levels: Quantile levels, strictly increasing, each in ``(0, 1)``.

    Returns:
        The forecast for every origin.

    Raises:
        ValueError: see the module conventions; or the training span holds fewer than
            2 returns of ``horizon`` steps (it needs ``horizon + 2`` prices); or a price is
            not positive; or the levels are invalid.
    """
    checked = _checked_levels(levels)
    series, starts, fit_end = _checked_span(
        history, origins, horizon, fit_start, fit_end, "naive_quantile"
    )
    if fit_end - fit_start - horizon + 1 < MIN_TRAINING_RETURNS:
        raise ValueError(
            f"naive_quantile needs at least {MIN_TRAINING_RETURNS} returns of {horizon} "
            f"step(s) in the training span, i.e. {horizon + MIN_TRAINING_RETURNS} prices; "
            f"[{fit_start}, {fit_end}] has {fit_end - fit_start + 1}"
        )
    log_prices = np.log(series[fit_start : fit_end + 1])
    quantile_rows, scale_row = [], []
    for step in range(1, horizon + 1):
        returns = log_prices[step:] - log_prices[:-step]
        quantile_rows.append(np.quantile(returns, checked, method="linear"))
        scale_row.append(returns.std(ddof=1))
    # Linear interpolation is monotone in the level, but its two rounding branches can
    # leave adjacent quantiles one ulp out of order; the running maximum removes that.
    log_quantiles = np.maximum.accumulate(np.array(quantile_rows), axis=1)
    last = series[starts]
    count = starts.size
    return DistributionForecast(
        yhat=np.repeat(last[:, None], horizon, axis=1),
        scale=np.broadcast_to(np.array(scale_row), (count, horizon)).copy(),
        quantiles=last[:, None, None] * np.exp(log_quantiles)[None, :, :],
        levels=checked,
    )


def naive_ewma(
    history: ArrayLike,
    origins: ArrayLike,
    horizon: int,
    fit_start: int,
    fit_end: int | None,
    levels: Sequence[float] = QUANTILE_LEVELS,
) -> DistributionForecast:
    """RiskMetrics EWMA volatility (lambda 0.94) with zero mean and normal quantiles.

    Nothing is fitted: the one-day volatility ``sigma_1`` at each origin is
    ``ewma_scale_at`` (started at the training span's mean squared return, filtered up
    to the origin's own return). Returns are taken as independent, so step ``h`` has
    ``scale = sigma_1 * sqrt(h)``; ``yhat`` is the last close and the quantiles are
    ``yhat * exp(scale * Phi^-1(level))``.

    Args:
        history: The price series, oldest first.
        origins: Index of the last observed price of each forecast.
        horizon: Number of steps ahead to forecast.
        fit_start: First index of the training span.
        fit_end: Last index of the training span; required, at most the first origin.
        levels: Quantile levels, strictly increasing, each in ``(0, 1)``.

    Returns:
        The forecast for every origin.

    Raises:
        ValueError: see the module conventions; or the training span has fewer than 2
            returns; or a price is not positive; or the levels are invalid.
    """
    checked = _checked_levels(levels)
    series, starts, fit_end = _checked_span(
        history, origins, horizon, fit_start, fit_end, "naive_ewma"
    )
    one_day = ewma_scale_at(series, starts, fit_start, fit_end)
    scale = one_day[:, None] * np.sqrt(np.arange(1, horizon + 1))[None, :]
    last = series[starts]
    return DistributionForecast(
        yhat=np.repeat(last[:, None], horizon, axis=1),
        scale=scale,
        quantiles=_price_quantiles(last, scale, _normal_quantiles(checked)),
        levels=checked,
    )


def fit_garch(history: ArrayLike, fit_start: int, fit_end: int) -> GarchFit:
    """Fit a zero-mean GARCH(1,1) with Student-t innovations to a training span.

    ``arch_model(100 * r, mean="Zero", vol="GARCH", p=1, q=1, dist="t")`` on the daily
    log returns ``r`` of ``history[fit_start : fit_end + 1]`` only, fitted with
    ``disp="off"``. ``arch``'s fit is deterministic: its starting values come from a
    fixed grid and SLSQP uses no randomness. The percent scaling is undone in the
    result.

    Args:
        history: The price series, oldest first; prices in the span must be positive.
        fit_start: First index of the training span.
        fit_end: Last index of the training span (inclusive).

    Returns:
        The fitted parameters and the variance of the span's last return.

    Raises:
        GarchFitError: the span has fewer than ``MIN_GARCH_RETURNS`` returns, its
            returns are all zero, the optimiser did not converge, or the parameters are
            unusable (NaN, ``nu <= 2``, ``alpha + beta > 1``, ``omega <= 0``). A
            persistence of exactly 1 (``arch`` stops at that bound on long spans of
            clustered volatility: an integrated GARCH) is kept; its forecasts are
            well defined.
        ValueError: the span is out of range or holds a non-positive or non-finite price.
    """
    # Imported here: arch pulls in statsmodels, which only this baseline needs.
    from arch import arch_model

    series = np.asarray(history, dtype=float)
    if series.ndim != 1 or not 0 <= fit_start <= fit_end < series.size:
        raise ValueError(
            f"the training span [{fit_start}, {fit_end}] is outside a 1-D history of "
            f"{series.size} points"
        )
    if not np.isfinite(series[fit_start : fit_end + 1]).all():
        raise ValueError(f"the training span [{fit_start}, {fit_end}] has NaN or infinite prices")
    returns = _log_returns(series, fit_start, fit_end)
    if returns.size < MIN_GARCH_RETURNS:
        raise GarchFitError(
            f"the training span has {returns.size} returns, fewer than the "
            f"{MIN_GARCH_RETURNS} a GARCH fit needs"
        )
    if not (returns != 0).any():
        raise GarchFitError("every return in the training span is zero")
    model = arch_model(
        GARCH_RETURN_SCALE * returns, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False
    )
    try:
        result = model.fit(disp="off", show_warning=False)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError) as error:
        raise GarchFitError(f"arch's fit raised {error!r}") from error
    if result.convergence_flag != 0:
        raise GarchFitError(
            f"the optimiser did not converge (code {result.convergence_flag}: "
            f"{result.optimization_result.message})"
        )
    params = result.params
    squared_scale = GARCH_RETURN_SCALE**2
    fit = GarchFit(
        omega=float(params["omega"]) / squared_scale,
        alpha=float(params["alpha[1]"]),
        beta=float(params["beta[1]"]),
        nu=float(params["nu"]),
        last_variance=float(result.conditional_volatility[-1]) ** 2 / squared_scale,
    )
    values = np.array([fit.omega, fit.alpha, fit.beta, fit.nu, fit.last_variance])
    if not np.isfinite(values).all():
        raise GarchFitError(f"the fit has NaN or infinite values: {fit}")
    if fit.nu <= 2:
        raise GarchFitError(f"nu = {fit.nu:.4g} <= 2: the Student-t has no finite variance")
    if fit.alpha + fit.beta > 1.0 + PERSISTENCE_TOLERANCE:
        raise GarchFitError(
            f"alpha + beta = {fit.alpha + fit.beta:.6g} > 1: the variance is explosive"
        )
    if fit.omega <= 0 or fit.alpha < 0 or fit.beta < 0:
        raise GarchFitError(f"the variance parameters must be positive, got {fit}")
    return fit


def naive_garch(
    history: ArrayLike,
    origins: ArrayLike,
    horizon: int,
    fit_start: int,
    fit_end: int | None,
    levels: Sequence[float] = QUANTILE_LEVELS,
) -> DistributionForecast:
    """GARCH(1,1) with Student-t innovations, fitted once per fold, zero mean.

    ``fit_garch`` fits the training span once; the parameters are then fixed and the
    variance recursion ``s[t + 1] = omega + alpha * r[t]**2 + beta * s[t]`` continues in
    NumPy from ``arch``'s last conditional variance through every return up to each
    origin, so origin ``o``'s one-step variance uses returns up to ``r[o]``. The
    per-day variance ``h`` steps ahead is the analytic GARCH forecast
    ``omega * (1 + p + ... + p**(h - 2)) + p**(h - 1) * s[o + 1]`` with persistence
    ``p = alpha + beta`` (for ``p < 1``, ``vbar + p**(h - 1) * (s[o + 1] - vbar)`` with
    ``vbar = omega / (1 - p)``; also defined at ``p = 1``), and the ``h``-step log
    return's variance is their sum over steps ``1..h``.

    The quantiles are ``yhat * exp(sqrt(summed variance) * t_nu^-1(level) *
    sqrt((nu - 2) / nu))``, the standardised (unit-variance) Student-t with the fitted
    ``nu``. For ``h = 1`` this is the model's exact distribution; for ``h > 1`` it is an
    approximation: a sum of GARCH-t daily returns is not Student-t, and its tails thin
    toward the normal as ``h`` grows, so the outer quantiles are somewhat too wide.

    When the span has fewer than ``MIN_GARCH_RETURNS`` returns, or the fit fails or is
    unusable (see ``fit_garch``), a warning naming the reason is logged and the result
    is ``naive_ewma``'s for the same arguments.

    Args:
        history: The price series, oldest first.
        origins: Index of the last observed price of each forecast.
        horizon: Number of steps ahead to forecast.
        fit_start: First index of the training span.
        fit_end: Last index of the training span; required, at most the first origin.
        levels: Quantile levels, strictly increasing, each in ``(0, 1)``.

    Returns:
        The forecast for every origin.

    Raises:
        ValueError: see the module conventions; or the training span has fewer than 2
            returns (too few even for the EWMA fallback); or a price is not positive; or
            the levels are invalid.
    """
    checked = _checked_levels(levels)
    series, starts, fit_end = _checked_span(
        history, origins, horizon, fit_start, fit_end, "naive_garch"
    )
    try:
        fit = fit_garch(series, fit_start, fit_end)
    except GarchFitError as error:
        logger.warning(
            "naive_garch: using the EWMA forecast instead of GARCH for training span [%d, %d]: %s",
            fit_start,
            fit_end,
            error,
        )
        return naive_ewma(series, starts, horizon, fit_start, fit_end, checked)
    # Returns after the span: r[fit_end] seeds the first step, the last needed is r[max o].
    later = _log_returns(series, fit_end - 1, int(starts.max()))
    from scipy import signal, stats  # 1 to 2 s to import: only where used

    filtered, _ = signal.lfilter(
        [1.0],
        [1.0, -fit.beta],
        fit.omega + fit.alpha * later**2,
        zi=np.array([fit.beta * fit.last_variance]),
    )
    # filtered[k] is the variance of the return ending at price fit_end + k + 1, given
    # returns up to the origin fit_end + k.
    one_step = filtered[starts - fit_end]
    persistence = min(fit.alpha + fit.beta, 1.0)
    decay = persistence ** np.arange(horizon)
    # omega * (1 + p + ... + p**(h - 2)): 0 at h = 1.
    accumulated = fit.omega * np.concatenate([[0.0], np.cumsum(decay[:-1])])
    per_day = accumulated[None, :] + decay[None, :] * one_step[:, None]
    scale = np.sqrt(np.cumsum(per_day, axis=1))
    shape_ppf = stats.t.ppf(np.array(checked), fit.nu) * np.sqrt((fit.nu - 2.0) / fit.nu)
    last = series[starts]
    return DistributionForecast(
        yhat=np.repeat(last[:, None], horizon, axis=1),
        scale=scale,
        quantiles=_price_quantiles(last, scale, shape_ppf),
        levels=checked,
    )


INTERVAL_BASELINES: dict[str, IntervalBaseline] = {
    "naive_quantile": naive_quantile,
    "naive_ewma": naive_ewma,
    "naive_garch": naive_garch,
}
