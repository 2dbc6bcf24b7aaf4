"""The predicted scale of a forecast: how far the price may move by each step.

The scale of step ``h`` from an origin is the standard deviation of the log
return from the origin's close to the target's, ``sigma * sqrt(h)``, where
``sigma**2`` mixes two variances of daily log returns:
``EWMA_WEIGHT * ewma**2 + (1 - EWMA_WEIGHT) * long_run**2``.

* ``ewma`` is an EWMA volatility at the origin, ``lambda = EWMA_LAMBDA``
  (0.88: faster than RiskMetrics' 0.94, see below):
  ``v <- lambda * v + (1 - lambda) * r**2`` over the last ``lookback`` returns up
  to and including the origin's, started at the mean squared return of those
  same returns. The fixed lookback makes it a function of the newest closes
  alone, so the forecast stage needs only those (``LOOKBACK + 1`` closes) and
  gives the same value as validation and backtests. With 100 returns the
  starting value weighs ``0.88 ** 100``, nothing.
* ``long_run`` is the root mean square daily log return of the span the model
  was trained on (``long_run_volatility``), fixed per model and ticker: the
  level volatility returns to after a shock, as a GARCH model's does.

How they were chosen: on ``stock_prices.csv`` (20 tickers, the backtest's 5
folds, one step, 90 % intervals by normalised conformal calibration per ticker
on each fold's validation span, centred on the naive forecast), mean MSIS and
coverage on each ticker's most volatile fifth of test days:

==============================================  =======  ============
scale                                           MSIS     volatile days
==============================================  =======  ============
EWMA 0.94 (RiskMetrics) alone                   12.098   0.845
EWMA 0.90 alone                                 12.175   0.861
EWMA 0.97 alone                                 12.058   0.808
HAR regression (1, 5, 22-day realised var.)     12.126   0.781
0.8 EWMA 0.94 + 0.2 long run                    12.009   0.796
0.9 EWMA 0.94 + 0.1 long run                    11.996   0.816
0.9 EWMA 0.90 + 0.1 long run                    11.978   0.836
**0.9 EWMA 0.88 + 0.1 long run**                11.989   0.843
0.95 EWMA 0.88 + 0.05 long run                  12.055   0.855
0.9 EWMA 0.85 + 0.1 long run                    12.014   0.846
GARCH(1,1)-t baseline (``naive_garch``)         12.033   0.818
==============================================  =======  ============

The long-run term buys MSIS (it narrows the bands once a shock has passed) at
the price of coverage on the most volatile days; a faster EWMA buys that back.
0.88 with 0.1 is the best of those with both; docs/forecasts.md shows it on series
no choice here looked at (the ``arch`` package's S&P 500, NASDAQ and WTI)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: The decay of the EWMA (RiskMetrics uses 0.94; see the table above).
EWMA_LAMBDA = 0.88
#: The EWMA's share of the variance; the rest is the long-run variance (see above).
EWMA_WEIGHT = 0.9
#: Daily returns the EWMA runs over (closes needed: one more).
LOOKBACK = 100
#: The scale never falls below this (a ticker whose price did not move at all).
MINIMUM_SCALE = 1e-6
#: Origins whose lookback block is computed at once (memory: this times LOOKBACK floats).
_EWMA_CHUNK = 65536


def ewma_volatility(
    closes: ArrayLike,
    origins: ArrayLike,
    lookback: int = LOOKBACK,
    lam: float = EWMA_LAMBDA,
    first: ArrayLike | None = None,
) -> np.ndarray:
    """The EWMA volatility of the next daily log return at each origin.

    Args:
        closes: One ticker's closes, oldest first, positive; or several tickers' closes
            one after the other, with ``first``.
        origins: Positions of the last observed close of each forecast (at least 1:
            one return is needed).
        lookback: Returns the recursion runs over, the origin's included.
        lam: The decay of the EWMA.
        first: With several tickers' closes, the position in ``closes`` of the first
            close of each origin's ticker: returns before it are not its own and are
            left out, as before the start of a single series. The result is the one
            each ticker's own call would give, computed for all origins at once.

    Returns:
        Array ``(n,)`` of standard deviations of daily log returns.

    Raises:
        ValueError: a close is not positive and finite, or an origin is out of range.
    """
    prices = np.asarray(closes, dtype=float)
    ends = np.asarray(origins, dtype=np.intp).reshape(-1)
    if prices.ndim != 1 or not np.all(np.isfinite(prices)) or (prices <= 0).any():
        raise ValueError("volatility needs a 1-D series of positive, finite closes")
    starts = (
        np.zeros(len(ends), dtype=np.intp)
        if first is None
        else np.asarray(first, dtype=np.intp).reshape(-1)
    )
    if len(starts) != len(ends):
        raise ValueError(f"first has {len(starts)} positions for {len(ends)} origins")
    if len(ends) and ((ends - starts).min() < 1 or ends.max() >= len(prices)):
        raise ValueError(
            f"origins must lie in [1, {len(prices) - 1}] (one return before each), "
            f"got [{(ends - starts).min()}, {ends.max()}]"
        )
    if lookback < 1 or not 0.0 < lam < 1.0:
        raise ValueError(f"lookback must be at least 1 and lam in (0, 1), got {lookback}, {lam}")
    # Squared returns, position p + lookback holding the return into close p (NaN
    # before the series), so that every lookback position indexes without clipping.
    squared = np.concatenate([np.full(lookback + 1, np.nan), np.diff(np.log(prices)) ** 2])
    # Returns (end - lookback, end] of each origin, oldest first; NaN before its series.
    offsets = np.arange(1, lookback + 1)
    weights = (1.0 - lam) * lam ** np.arange(lookback - 1, -1, -1, dtype=float)
    result = np.empty(len(ends))
    for chunk in range(0, len(ends), _EWMA_CHUNK):  # bounds the (origins, lookback) block
        rows = slice(chunk, chunk + _EWMA_CHUNK)
        positions = ends[rows, None] + offsets[None, :]  # shifted by lookback
        block = squared[positions]
        block[positions <= starts[rows, None] + lookback] = np.nan
        present = ~np.isnan(block)
        start = np.nanmean(block, axis=1)
        # The recursion v <- lam * v + (1 - lam) * r over the present returns, a suffix
        # of the lookback (the missing ones come before the series), in closed form:
        # lam ** present * v0 + sum of (1 - lam) * lam ** (returns after r) * r.
        # Summed row by row in NumPy, not as a matrix-vector product: BLAS may round a
        # row's sum differently by where the row falls in the block (one ulp, seen with
        # OpenBLAS 0.3.31 on AMD EPYC), and an origin's volatility must not depend on
        # which other origins it is computed with.
        weighted = np.where(present, block, 0.0) * weights
        result[rows] = lam ** present.sum(axis=1) * start + weighted.sum(axis=1)
    return np.maximum(np.sqrt(result), MINIMUM_SCALE)


def step_scales(volatility: ArrayLike, horizon: int) -> np.ndarray:
    """Scales ``(n, horizon)`` of steps 1..``horizon``: ``volatility * sqrt(h)``."""
    sigma = np.asarray(volatility, dtype=float).reshape(-1, 1)
    return sigma * np.sqrt(np.arange(1, horizon + 1))[None, :]


def long_run_volatility(closes: ArrayLike) -> float:
    """The root mean square daily log return of a training span's closes.

    Raises:
        ValueError: fewer than two closes, or a close is not positive and finite.
    """
    prices = np.asarray(closes, dtype=float)
    if prices.ndim != 1 or len(prices) < 2:
        raise ValueError(f"the long-run volatility needs at least 2 closes, got {prices.shape}")
    if not np.all(np.isfinite(prices)) or (prices <= 0).any():
        raise ValueError("volatility needs a 1-D series of positive, finite closes")
    return max(float(np.sqrt(np.mean(np.diff(np.log(prices)) ** 2))), MINIMUM_SCALE)


def predicted_volatility(
    closes: ArrayLike, origins: ArrayLike, long_run: float | None
) -> np.ndarray:
    """The predicted volatility of the next daily log return at each origin.

    ``sqrt(EWMA_WEIGHT * ewma**2 + (1 - EWMA_WEIGHT) * long_run**2)``; the EWMA alone
    when ``long_run`` is None (models calibrated before the long-run term).

    Args:
        closes: One ticker's closes, oldest first, positive.
        origins: Positions of the last observed close of each forecast.
        long_run: The ticker's ``long_run_volatility`` over its training span.
    """
    return blended_volatility(ewma_volatility(closes, origins), long_run)


def blended_volatility(ewma: np.ndarray, long_run: ArrayLike | None) -> np.ndarray:
    """``sqrt(EWMA_WEIGHT * ewma**2 + (1 - EWMA_WEIGHT) * long_run**2)``: the predicted
    volatility from EWMA volatilities and a long-run volatility, one for every value of
    ``ewma`` or one per value; ``ewma`` itself when ``long_run`` is None. The long-run
    term is computed in Python floats, as forecasts always computed it.
    """
    if long_run is None:
        return ewma
    term = np.array([(1.0 - EWMA_WEIGHT) * float(value) ** 2 for value in np.ravel(long_run)])
    return np.sqrt(EWMA_WEIGHT * ewma**2 + (term if np.ndim(long_run) else term[0]))
