"""A model version ready to predict: its networks, its scaler and each ticker's parameters.

Training (validation, the champion gate, interval calibration), the forecast
stage and backtests all predict through this one class, in price space:
raw windows go in, closes come out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from pipeline.db.models import model_scalers
from pipeline.model.network import as_inputs
from pipeline.model.numpy_lstm import NumpyLSTM, read_networks
from pipeline.model.store import GLOBAL
from pipeline.sequences.scaling import Params, Scaler, get_scaler, stack_params

_CHUNK = 8192


def _predict(network: Any, encoded: np.ndarray) -> np.ndarray:
    """Predict one chunk; for Keras, padded to a power-of-two batch so it traces few shapes."""
    if isinstance(network, NumpyLSTM):
        return network.predict(encoded)
    size = len(encoded)
    padded = max(32, 1 << (size - 1).bit_length())
    batch = np.zeros((padded, encoded.shape[1]), dtype=float)
    batch[:size] = encoded
    return np.asarray(network.predict_on_batch(as_inputs(batch))).reshape(-1)[:size]


@dataclass
class Predictor:
    """Networks (one ``GLOBAL`` or one per ticker), a scaler, and per-ticker parameters.

    ``damping`` (per ticker, default 1) shrinks each one-step prediction toward
    the last close: ``last + damping * (prediction - last)``; 0 is the naive
    forecast. It is fitted on the validation span (``validation.fit_damping``).
    """

    window: int
    scaler: Scaler
    params: Mapping[str, Params]
    networks: Mapping[str, Any]
    damping: Mapping[str, float] = field(default_factory=dict)

    @property
    def tickers(self) -> list[str]:
        return sorted(self.params)

    def _groups(self, tickers: Sequence[str]) -> dict[str, np.ndarray]:
        keys = np.array(
            [GLOBAL if GLOBAL in self.networks else ticker for ticker in tickers], dtype=object
        )
        return {key: np.flatnonzero(keys == key) for key in dict.fromkeys(keys.tolist())}

    def predict_next(self, tickers: Sequence[str], windows: np.ndarray) -> np.ndarray:
        """The next close after each raw window ``(n, window)`` of the given tickers."""
        windows = np.asarray(windows, dtype=float)
        if windows.ndim != 2 or windows.shape[1] != self.window:
            raise ValueError(f"expected windows of shape (n, {self.window}), got {windows.shape}")
        result = np.empty(len(windows))
        for key, rows in self._groups(tickers).items():
            params = stack_params([self.params[tickers[row]] for row in rows])
            encoded = self.scaler.encode(windows[rows], params)
            network = self.networks[key]
            predicted = np.concatenate(
                [
                    _predict(network, encoded[start : start + _CHUNK])
                    for start in range(0, len(rows), _CHUNK)
                ]
            )
            result[rows] = self.scaler.decode(predicted, windows[rows], params)
        factors = np.array([self.damping.get(ticker, 1.0) for ticker in tickers], dtype=float)
        if np.any(factors != 1.0):
            last = windows[:, -1]
            result = last + factors * (result - last)
        return result

    def predict_path(self, tickers: Sequence[str], windows: np.ndarray, horizon: int) -> np.ndarray:
        """Closes for ``horizon`` steps, each prediction fed back as the newest input.

        Returns:
            An array ``(n, horizon)``.
        """
        current = np.asarray(windows, dtype=float).copy()
        path = np.empty((len(current), horizon))
        for step in range(horizon):
            path[:, step] = self.predict_next(tickers, current)
            current = np.concatenate([current[:, 1:], path[:, step : step + 1]], axis=1)
        return path


def load_predictor(
    conn: Connection, model_row: Mapping[str, Any], tickers: Sequence[str] | None = None
) -> Predictor:
    """The predictor of a registered model version (for ``tickers``, default all it covers).

    Its networks are NumPy forward passes read from the model's files
    (``numpy_lstm``): they agree with Keras' to float32 rounding.
    """
    scalers = model_scalers(conn, model_row["version"])
    wanted = sorted(tickers) if tickers is not None else sorted(scalers)
    scaling = {scalers[ticker]["scaling"] for ticker in wanted} or {
        model_row["hyperparameters"].get("scaling", "minmax")
    }
    (name,) = scaling
    # Read in NumPy (numpy_lstm): forecasting with a stored model imports no TensorFlow.
    networks = read_networks(
        Path(model_row["file_path"]),
        None if Path(model_row["file_path"]).is_file() else list(wanted),
    )
    return Predictor(
        window=int(model_row["hyperparameters"]["window"]),
        scaler=get_scaler(name),
        params={ticker: scalers[ticker]["scaler_params"] for ticker in wanted},
        networks=networks,
        damping={
            ticker: float(scalers[ticker]["damping"])
            for ticker in wanted
            if scalers[ticker].get("damping") is not None
        },
    )
