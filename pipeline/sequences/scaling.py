"""Scalers as pure fit / apply / invert functions over plain parameters.

The fitted parameters are JSON-ready dictionaries, stored with the sequence
files and with every model version that used them, so forecasts can be
inverted long after training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Params = dict[str, Any]


def fit_minmax(values: np.ndarray) -> Params:
    """The minimum and maximum of ``values``, which map to 0 and 1 (the seed's scaler)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("min-max scaling needs at least one finite value and no NaN")
    return {"min": float(values.min()), "max": float(values.max())}


def _span(params: Params) -> float:
    span = params["max"] - params["min"]
    # A constant series scales to 0, as scikit-learn's MinMaxScaler does.
    return span if span > 0 else 1.0


def apply_minmax(values: np.ndarray, params: Params) -> np.ndarray:
    """Map prices to the scaled space: ``(x - min) / (max - min)``."""
    return (np.asarray(values, dtype=float) - params["min"]) / _span(params)


def invert_minmax(values: np.ndarray, params: Params) -> np.ndarray:
    """Map scaled values back to prices."""
    return np.asarray(values, dtype=float) * _span(params) + params["min"]


@dataclass(frozen=True)
class Scaler:
    """One scaling method's three functions."""

    name: str
    fit: Callable[[np.ndarray], Params]
    apply: Callable[[np.ndarray, Params], np.ndarray]
    invert: Callable[[np.ndarray, Params], np.ndarray]


SCALERS: dict[str, Scaler] = {
    "minmax": Scaler("minmax", fit_minmax, apply_minmax, invert_minmax),
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


def rescale(values: np.ndarray, scaler: Scaler, source: Params, target: Params) -> np.ndarray:
    """Values scaled with ``source`` parameters, re-expressed with ``target`` parameters."""
    return scaler.apply(scaler.invert(values, source), target)
