"""Scalers: fit on a training span, then encode windows and decode predictions.

Each scaler is a set of pure functions over plain, JSON-ready parameters,
stored with the sequence files and with every model version that used them,
so forecasts can be decoded long after training:

* ``fit(closes)``: parameters from the training span's closes only;
* ``encode(windows, params)``: raw windows ``(n, W)`` to model inputs;
* ``encode_target(targets, windows, params)``: the next closes ``(n,)`` to targets;
* ``decode(predictions, windows, params)``: predicted targets back to closes.

Parameters may be scalars or, to encode rows of several tickers at once,
arrays with one value per row (``stack_params``).

Scalings:

* ``minmax``: the tutorial's ``MinMaxScaler(0, 1)``: ``(x - min) / (max - min)``
  with min and max of the training span. Kept for fidelity; its output depends
  on the price level, so a price outside the training range is extrapolation.
* ``log_ratio``: level-free: each window relative to its own last close,
  ``log(x / x_last) / scale``, and the target ``log(y / x_last) / scale``,
  where ``scale`` is the standard deviation of the training span's one-day
  log returns. A prediction of 0 is "tomorrow equals today" (the naive
  forecast), and the same network serves tickers at any price.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Params = dict[str, Any]


def _column(value: Any) -> Any:
    """A parameter as a scalar, or as a column that broadcasts over window rows."""
    array = np.asarray(value, dtype=float)
    return array.reshape(-1, 1) if array.ndim else float(array)


def _row(value: Any) -> Any:
    array = np.asarray(value, dtype=float)
    return array.reshape(-1) if array.ndim else float(array)


def _check(closes: np.ndarray) -> np.ndarray:
    closes = np.asarray(closes, dtype=float)
    if closes.size == 0 or not np.all(np.isfinite(closes)):
        raise ValueError("scaling needs at least one finite close and no NaN")
    return closes


def fit_minmax(closes: np.ndarray) -> Params:
    """The minimum and maximum of the training closes, which map to 0 and 1."""
    closes = _check(closes)
    return {"min": float(closes.min()), "max": float(closes.max())}


def _span(params: Mapping[str, Any], shape: Callable[[Any], Any]) -> Any:
    span = shape(params["max"]) - shape(params["min"])
    # A constant series scales to 0, as scikit-learn's MinMaxScaler does.
    return np.where(span > 0, span, 1.0) if np.ndim(span) else (span if span > 0 else 1.0)


def encode_minmax(windows: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    return (np.asarray(windows, float) - _column(params["min"])) / _span(params, _column)


def encode_target_minmax(
    targets: np.ndarray, windows: np.ndarray, params: Mapping[str, Any]
) -> np.ndarray:
    return (np.asarray(targets, float) - _row(params["min"])) / _span(params, _row)


def decode_minmax(
    predictions: np.ndarray, windows: np.ndarray, params: Mapping[str, Any]
) -> np.ndarray:
    return np.asarray(predictions, float) * _span(params, _row) + _row(params["min"])


def fit_log_ratio(closes: np.ndarray) -> Params:
    """The standard deviation of the training closes' one-day log returns."""
    closes = _check(closes)
    if np.any(closes <= 0):
        raise ValueError("log-ratio scaling needs positive closes")
    returns = np.diff(np.log(closes))
    scale = float(returns.std()) if returns.size > 1 else 0.0
    return {"scale": scale if scale > 0 else 1.0}


def encode_log_ratio(windows: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    windows = np.asarray(windows, float)
    return np.log(windows / windows[:, -1:]) / _column(params["scale"])


def encode_target_log_ratio(
    targets: np.ndarray, windows: np.ndarray, params: Mapping[str, Any]
) -> np.ndarray:
    windows = np.asarray(windows, float)
    return np.log(np.asarray(targets, float) / windows[:, -1]) / _row(params["scale"])


def decode_log_ratio(
    predictions: np.ndarray, windows: np.ndarray, params: Mapping[str, Any]
) -> np.ndarray:
    windows = np.asarray(windows, float)
    return windows[:, -1] * np.exp(np.asarray(predictions, float) * _row(params["scale"]))


@dataclass(frozen=True)
class Scaler:
    """One scaling method's functions (see the module docstring)."""

    name: str
    fit: Callable[[np.ndarray], Params]
    encode: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]
    encode_target: Callable[[np.ndarray, np.ndarray, Mapping[str, Any]], np.ndarray]
    decode: Callable[[np.ndarray, np.ndarray, Mapping[str, Any]], np.ndarray]


SCALERS: dict[str, Scaler] = {
    "minmax": Scaler("minmax", fit_minmax, encode_minmax, encode_target_minmax, decode_minmax),
    "log_ratio": Scaler(
        "log_ratio", fit_log_ratio, encode_log_ratio, encode_target_log_ratio, decode_log_ratio
    ),
}


def get_scaler(name: str) -> Scaler:
    """The scaler called ``name``.

    Raises:
        ValueError: no scaler has that name.
    """
    try:
        return SCALERS[name]
    except KeyError:
        raise ValueError(f"unknown scaling {name!r}; choose one of {sorted(SCALERS)}") from None


def stack_params(params: Sequence[Mapping[str, Any]]) -> Params:
    """One parameter set per row, stacked into arrays that ``encode`` and ``decode`` accept."""
    keys = params[0].keys() if params else ()
    return {key: np.array([row[key] for row in params], dtype=float) for key in keys}
