"""The network's forward pass in NumPy, read from a ``.keras`` file without TensorFlow.

Forecasting, validating and backtesting only ever run the network forward:
``LSTM(units)`` over a window of scaled closes (and, for a distributional network,
a second feature), then ``Dense(1)`` (or ``Dense(2)``: a location and a scale). Importing
TensorFlow and Keras to do that costs several seconds per process, more than
the forecasts themselves; a run that reuses its champion (most daily runs)
need not pay it. Every prediction of the pipeline goes through this one
implementation, for networks just trained (``from_keras``) and for networks
read from their files (``read_keras_file``) alike, so a champion scores the
same whichever way it was loaded.

The arithmetic is Keras' LSTM cell (gates in the order input, forget, cell,
output; ``sigmoid`` and ``tanh``) in float32, as Keras computes it; results
agree with ``keras.Model.predict`` to float32 rounding (tested).
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from pipeline.errors import ModelStoreError
from pipeline.model.groups import is_grouped, ticker_networks

#: Rows of one block of the forward pass (fastest of 512 to 8192 on 2 cores).
_ROWS = 4096
#: Threads the blocks of one forward pass run on: one a core, at most four.
_THREADS = max(1, min(4, os.cpu_count() or 1))

_WEIGHTS = "model.weights.h5"
_CONFIG = "config.json"


@dataclass(frozen=True)
class NumpyLSTM:
    """``LSTM(units)`` then ``Dense(1)`` or ``Dense(2)``: the weights, and the forward pass."""

    kernel: np.ndarray  # (features, 4 * units)
    recurrent_kernel: np.ndarray  # (units, 4 * units)
    bias: np.ndarray  # (4 * units,)
    dense_kernel: np.ndarray  # (units, outputs)
    dense_bias: np.ndarray  # (outputs,)

    @property
    def units(self) -> int:
        return self.recurrent_kernel.shape[0]

    @property
    def features(self) -> int:
        """Inputs per time step: 1 (scaled closes) or 2 (and the volatility feature)."""
        return self.kernel.shape[0]

    @property
    def outputs(self) -> int:
        """1 (a point) or 2 (a location and a raw scale)."""
        return self.dense_kernel.shape[1]

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Outputs ``(n,)`` (one output) or ``(n, 2)`` for windows ``(n, window)`` or
        ``(n, window, features)``.

        Rows go through in blocks of ``_ROWS`` with BLAS on one thread: the products
        are small (``units`` by ``4 * units``), and OpenBLAS spreading each one over
        the cores made a forward pass 2 to 10 times slower on a shared machine
        (``benchmarks/span_judging.py``). The blocks run on ``_THREADS`` threads
        instead (NumPy and BLAS release the GIL), each block computed as it would be
        alone, so the outputs are the same whatever the number of threads.
        """
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim == 2:
            x = x[..., np.newaxis]
        if x.shape[-1] != self.features:
            raise ValueError(f"the network takes {self.features} features, got {x.shape[-1]}")
        blocks = [x[start : start + _ROWS] for start in range(0, len(x), _ROWS)]
        with _blas().limit(limits=1, user_api="blas"):
            if len(blocks) > 1 and _THREADS > 1:
                out = list(_pool().map(self._forward, blocks))
            else:
                out = [self._forward(block) for block in blocks]
        result = np.concatenate(out) if out else np.empty((0, self.outputs), np.float32)
        return result.reshape(-1) if self.outputs == 1 else result

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n, steps, _ = x.shape
        units = self.units
        h = np.zeros((n, units), dtype=np.float32)
        c = np.zeros((n, units), dtype=np.float32)
        projected = x @ self.kernel + self.bias  # (n, steps, 4 * units), all steps at once
        for step in range(steps):
            z = projected[:, step, :] + h @ self.recurrent_kernel
            # In place, gate by gate: the arithmetic of the textbook cell, fewer temporaries.
            _sigmoid_(z[:, : 2 * units])
            _sigmoid_(z[:, 3 * units :])
            np.tanh(z[:, 2 * units : 3 * units], out=z[:, 2 * units : 3 * units])
            i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
            c = f * c + i * g
            h = o * np.tanh(c)
        return h @ self.dense_kernel + self.dense_bias

    @classmethod
    def from_keras(cls, model: Any) -> NumpyLSTM:
        """The forward pass of a built Keras ``Sequential([Input, LSTM, Dense(k)])``."""
        lstm, dense = _layers_of(type(layer).__name__ for layer in model.layers)
        kernel, recurrent, bias = model.layers[lstm].get_weights()
        dense_kernel, dense_bias = model.layers[dense].get_weights()
        return cls._checked(kernel, recurrent, bias, dense_kernel, dense_bias, origin="the network")

    @classmethod
    def _checked(cls, *arrays: np.ndarray | Any, origin: str) -> NumpyLSTM:
        kernel, recurrent, bias, dense_kernel, dense_bias = (
            np.asarray(array, dtype=np.float32) for array in arrays
        )
        units = recurrent.shape[0]
        if (
            kernel.ndim != 2
            or kernel.shape[1] != 4 * units
            or recurrent.shape != (units, 4 * units)
            or bias.shape != (4 * units,)
            or kernel.shape[0] not in (1, 2)
            or dense_kernel.ndim != 2
            or dense_kernel.shape[0] != units
            or dense_kernel.shape[1] not in (1, 2)
            or dense_bias.shape != (dense_kernel.shape[1],)
        ):
            raise ModelStoreError(f"{origin} is not an LSTM then Dense(1) or Dense(2) network")
        return cls(kernel, recurrent, bias, dense_kernel, dense_bias)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """The threads the blocks of a forward pass run on (started when first needed)."""
    return ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="numpy-lstm")


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS libraries, found once (``threadpoolctl``)."""
    return ThreadpoolController()


def _sigmoid_(z: np.ndarray) -> None:
    """``1 / (1 + exp(-z))`` in place (the same float32 operations, no temporaries)."""
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1.0
    np.divide(1.0, z, out=z)


def _layers_of(names: Any) -> tuple[int, int]:
    """Positions of the LSTM and Dense layers among the model's layers (input excluded)."""
    classes = list(names)
    if classes.count("LSTM") != 1 or classes.count("Dense") != 1:
        raise ModelStoreError(f"expected one LSTM and one Dense layer, found {classes}")
    return classes.index("LSTM"), classes.index("Dense")


def read_keras_file(path: Path) -> NumpyLSTM:
    """The forward pass of a network saved by Keras as ``path`` (a ``.keras`` zip).

    Raises:
        ModelStoreError: the file is missing, not a Keras archive, or not an
            ``LSTM`` then ``Dense(1)`` or ``Dense(2)`` network.
    """
    import h5py  # a dependency of TensorFlow; cheap to import, unlike it

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(_CONFIG))
            weights = archive.read(_WEIGHTS)
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ModelStoreError(f"cannot read model file {path}: {exc}") from exc
    described = [
        layer
        for layer in config.get("config", {}).get("layers", [])
        if layer.get("class_name") in ("LSTM", "Dense")
    ]
    lstm, dense = _layers_of(layer["class_name"] for layer in described)
    layers = [layer.get("config", {}).get("name") for layer in described]
    try:
        with h5py.File(io.BytesIO(weights), "r") as store:
            cell = store[f"layers/{_stored_name(store, layers[lstm], 'lstm')}/cell/vars"]
            head = store[f"layers/{_stored_name(store, layers[dense], 'dense')}/vars"]
            arrays = [cell["0"][()], cell["1"][()], cell["2"][()], head["0"][()], head["1"][()]]
    except (OSError, KeyError) as exc:
        raise ModelStoreError(f"model file {path} lacks the LSTM's weights: {exc}") from exc
    return NumpyLSTM._checked(*arrays, origin=f"model file {path}")


def _stored_name(store: Any, name: str, kind: str) -> str:
    """The group of a layer in the weights file: Keras 3 stores a model's layers under
    names derived from their class (``lstm``, ``dense``), not under the layer's own
    name, which differs (``lstm_1``) when the process built another network first."""
    return name if f"layers/{name}" in store else kind


def read_networks(path: Path, tickers: list[str] | None = None) -> dict[str, NumpyLSTM]:
    """A saved model's networks for prediction, keyed like ``store.load_networks``.

    Args:
        path: the model's file (one global network) or folder (one per ticker).
        tickers: for a per-ticker model, the tickers to read (default all).

    Raises:
        ModelStoreError: the files are missing or are not such networks.
    """
    from pipeline.model.store import GLOBAL

    if not path.exists():
        raise ModelStoreError(f"model file {path} is missing; retrain with --mode retrain")
    if path.is_file():
        return {GLOBAL: read_keras_file(path)}
    files = {file.stem: file for file in sorted(path.glob("*.keras"))}
    if is_grouped(files):
        return _read_grouped(path, files, tickers)
    wanted = tickers if tickers is not None else list(files)
    missing = sorted(set(wanted) - set(files))
    if missing:
        raise ModelStoreError(f"model folder {path} has no network for {', '.join(missing)}")
    return {ticker: read_keras_file(files[ticker]) for ticker in wanted}


def _read_grouped(
    path: Path, files: dict[str, Path], tickers: list[str] | None
) -> dict[str, NumpyLSTM]:
    """A grouped model's networks (``pipeline.model.groups``): keyed by group, or, for
    ``tickers``, each ticker to its group's network (read once per group)."""
    networks = {key: read_keras_file(file) for key, file in files.items()}
    if tickers is None:
        return networks
    try:
        return ticker_networks(networks, tickers, f"model folder {path}")
    except ValueError as exc:
        raise ModelStoreError(str(exc)) from exc
