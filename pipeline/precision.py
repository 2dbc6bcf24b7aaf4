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
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return MAX_DECIMALS
    tolerance = _ULPS * np.spacing(np.abs(finite))
    for places in range(MAX_DECIMALS + 1):
        if np.all(np.abs(np.round(finite, places) - finite) <= tolerance):
            return places
    return MAX_DECIMALS


def float32_text(value: float) -> str | None:
    """The shortest decimal text of ``value`` when it is exactly a single-precision
    float (``172.44000244140625`` -> ``"172.44"``), else ``None``: a double that is
    not a float32 did not come from one, and its own shortest text is already exact."""
    single = np.float32(value)
    if not np.isfinite(single) or float(single) != value:
        return None
    return np.format_float_positional(single, unique=True, trim="-")
