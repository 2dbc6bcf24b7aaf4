"""Prices keep the precision of their input; forecasts are rounded to it.

SQL consumers read prices and forecasts as numbers, and a forecast of
``173.12345678901234`` for a stock quoted to the cent, or a stored close of
``172.44000244140625`` for a close quoted ``172.44``, is noise that looks like
information. Two rules, documented in docs/database.md ("Numbers as quoted"):

* **Stored prices** are the input's numbers. Text (CSV files and feeds) is
  parsed to the nearest double, which reads back as the same text. Binary
  single-precision floats (a Parquet ``float`` column, Yahoo's chart data,
  which quotes in single precision) carry about seven significant digits: they
  are read as the shortest decimal that is the same single-precision number
  (``float32_text``), so ``172.44f`` is stored as ``172.44``, not as its binary
  expansion ``172.44000244140625``.
* **Forecasts** (``yhat``, the interval bounds and the quantiles) are rounded
  to the number of decimals of the ticker's closes that the forecast read
  (``decimals``): the most any of them has, at most ``MAX_DECIMALS``. The
  bundled sample quotes six decimals (``172.440002``), so its forecasts have
  six; a feed quoting cents gets forecasts in cents. The ``scale`` column
  (a log-return volatility, not a price) is not rounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The most decimals a forecast keeps, whatever its input: prices below a
#: millionth of a unit are not quoted anywhere we read from.
MAX_DECIMALS = 8

#: How close a value must be to its rounding to count as having that many
#: decimals, in units in the last place: the double nearest ``172.440002``
#: differs from ``172.440002`` by half a unit at most, and ``np.round`` by one.
_ULPS = 8


def decimals(values: np.ndarray) -> int:
    """The fewest decimals (0 to ``MAX_DECIMALS``) that write every finite value of
    ``values`` exactly; ``MAX_DECIMALS`` when none does (binary noise in the input)."""
    return int(decimals_of_each([values])[0])


def decimals_of_each(series: Sequence[np.ndarray]) -> np.ndarray:
    """``decimals`` of each of ``series`` (a ticker's closes each), all at once: the
    fewest decimals that write every finite value of it exactly, ``MAX_DECIMALS`` when
    none does or it has no finite value. The forecast stage rounds every ticker's
    forecasts so; one ticker at a time, that was a tenth of the stage at 1,000 tickers."""
    lengths = np.array([len(values) for values in series], dtype=np.intp)
    values = (
        np.concatenate([np.asarray(values, dtype=float).reshape(-1) for values in series])
        if len(series)
        else np.empty(0)
    )
    owner = np.repeat(np.arange(len(series)), lengths)
    finite = np.isfinite(values)
    values, owner = values[finite], owner[finite]
    result = np.full(len(series), MAX_DECIMALS)
    undecided = np.bincount(owner, minlength=len(series)) > 0
    tolerance = _ULPS * np.spacing(np.abs(values))
    for places in range(MAX_DECIMALS + 1):
        if not undecided.any():
            break
        inexact = np.abs(np.round(values, places) - values) > tolerance
        exact = undecided & (np.bincount(owner[inexact], minlength=len(series)) == 0)
        result[exact] = places
        undecided &= ~exact
        keep = undecided[owner]  # only the values of series still undecided
        values, owner, tolerance = values[keep], owner[keep], tolerance[keep]
    return result


def float32_text(value: float) -> str | None:
    """The shortest decimal text of ``value`` when it is exactly a single-precision
    float (``172.44000244140625`` -> ``"172.44"``), else ``None``: a double that is
    not a float32 did not come from one, and its own shortest text is already exact."""
    single = np.float32(value)
    if not np.isfinite(single) or float(single) != value:
        return None
    return np.format_float_positional(single, unique=True, trim="-")
