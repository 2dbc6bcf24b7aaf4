"""A model version ready to predict: its networks, its scaler and each ticker's parameters.

Training (validation, the champion gate, interval calibration), the forecast
stage and backtests all predict through this one class, in price space:
raw windows go in, closes come out.

A distributional network (trained with the ``laplace`` loss) also says how
uncertain each prediction is. It reads, besides the scaled window, the recent
volatility of its ticker: ``log(ewma / long_run)``, the EWMA volatility of
daily log returns at the window's last close (``pipeline.model.scale``) over
the ticker's long-run volatility on the training span (stored with the
scaler's parameters as ``volatility``, fixed like them through fine-tunes), the
same value at every step of the window. It outputs the location and the Laplace scale of the next
scaled log return; ``predict_distribution`` turns them into closes and the
standard deviation of the next log return, and ``predict_paths`` carries both
over several steps (the EWMA updated with each step's expected squared return).
Why this input and this loss: ``benchmarks/distribution_heads.py`` (the network's
own scale beats the EWMA scale; with the volatility input by 2.5 % of MSIS on
series it never saw; Gaussian and Laplace likelihoods tie).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection

from pipeline.db.models import model_scalers
from pipeline.model.network import as_inputs, network_scale
from pipeline.model.numpy_lstm import NumpyLSTM, read_networks
from pipeline.model.scale import EWMA_LAMBDA, MINIMUM_SCALE
from pipeline.model.store import GLOBAL, check_files
from pipeline.sequences.scaling import Params, Scaler, get_scaler, stack_params

_CHUNK = 8192
#: Rows of one block of a compiled (XLA) forward pass of a Keras network: every block has
#: this shape (the last one padded), so a network compiles once.
_COMPILED_ROWS = 4096
#: The fewest rows of one pass for which a Keras network is compiled with XLA rather than
#: predicted as it is. Compiling costs about a second; it then runs in half the CPU time
#: of ``predict_on_batch`` (4.5 against 10.8 microseconds a row, ``LSTM(32)`` over 10
#: steps, ``benchmarks/xla.py``), so it pays from a few hundred thousand rows:
#: a training's validation span at a thousand tickers is passed over five times.
XLA_MIN_ROWS = 65_536
#: Each Keras network's compiled forward pass, built the first time it is needed.
_COMPILED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: A NaN-free value to pad the last block with (the rows are independent).
_PAD = 0.0
#: The key of a ticker's long-run volatility among a distributional model's scaler parameters.
VOLATILITY_PARAM = "volatility"


def _predict(network: Any, encoded: np.ndarray) -> np.ndarray:
    """Predict one chunk: ``(n,)`` or, for two outputs, ``(n, 2)``. For Keras, padded to
    a power-of-two batch so it traces few shapes."""
    if isinstance(network, NumpyLSTM):
        return network.predict(encoded)
    size = len(encoded)
    padded = max(32, 1 << (size - 1).bit_length())
    batch = np.zeros((padded, *encoded.shape[1:]), dtype=float)
    batch[:size] = encoded
    out = np.asarray(network.predict_on_batch(as_inputs(batch)))[:size]
    return out.reshape(-1) if out.shape[-1] == 1 else out


def _compiled(network: Any) -> Any:
    """``network``'s forward pass compiled with XLA (``tf.function(jit_compile=True)``)."""
    forward = _COMPILED.get(network)
    if forward is None:
        import tensorflow as tf  # only ever for a Keras network: TensorFlow is loaded

        # The network is referred to weakly, so its entry (and the compiled function)
        # goes when the network does: a long-lived process fits many.
        ref = weakref.ref(network)
        forward = tf.function(lambda batch: ref()(batch, training=False), jit_compile=True)
        _COMPILED[network] = forward
    return forward


def _predict_compiled(network: Any, encoded: np.ndarray) -> np.ndarray:
    """``_predict`` of a Keras network over every row, in blocks of ``_COMPILED_ROWS``
    through its XLA-compiled forward pass. The outputs agree with ``predict_on_batch``'s
    and the NumPy pass's to float32 rounding (tested)."""
    forward = _compiled(network)
    inputs = as_inputs(encoded)
    blocks = []
    for start in range(0, len(inputs), _COMPILED_ROWS):
        block = inputs[start : start + _COMPILED_ROWS]
        size = len(block)
        if size < _COMPILED_ROWS:
            block = np.concatenate(
                [block, np.full((_COMPILED_ROWS - size, *block.shape[1:]), _PAD, np.float32)]
            )
        blocks.append(np.asarray(forward(block))[:size])
    out = np.concatenate(blocks)
    return out.reshape(-1) if out.shape[-1] == 1 else out


def _predict_all(network: Any, encoded: np.ndarray) -> np.ndarray:
    """``_predict`` over every row of one pass: a large pass of a Keras network through its
    compiled forward pass (``XLA_MIN_ROWS``), anything else chunk by chunk."""
    if not isinstance(network, NumpyLSTM) and len(encoded) >= XLA_MIN_ROWS:
        return _predict_compiled(network, encoded)
    return np.concatenate(
        [
            _predict(network, encoded[start : start + _CHUNK])
            for start in range(0, len(encoded), _CHUNK)
        ]
    )


def damped(predicted: np.ndarray, last: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Predictions shrunk toward the last close by each row's damping factor (1: not at
    all; ``predicted`` as it is when no row is damped)."""
    if not np.any(factors != 1.0):
        return predicted
    return last + factors * (predicted - last)


def outputs_of(network: Any) -> int:
    """1 for a point network, 2 for a distributional one (NumPy or Keras; anything
    else that predicts is taken for a point network)."""
    if isinstance(network, NumpyLSTM):
        return network.outputs
    shape = getattr(network, "output_shape", None)
    return 1 if shape is None else int(shape[-1])


def volatility_feature(
    windows: np.ndarray, volatility: np.ndarray, long_run: np.ndarray
) -> np.ndarray:
    """The distributional network's second input ``(n, window)``: ``log(volatility /
    long_run)`` of each row, repeated over the window."""
    ratio = np.log(
        np.maximum(np.asarray(volatility, float), MINIMUM_SCALE)
        / np.maximum(np.asarray(long_run, float), MINIMUM_SCALE)
    )
    return np.repeat(ratio.reshape(-1, 1), np.shape(windows)[1], axis=1)


def _by_network(
    networks: Mapping[str, Any], rows_of: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The rows of each network, from each ticker's rows, keyed by the first ticker of
    the network: the tickers of a ticker group share one network object
    (``pipeline.model.groups``), predicted in one batch."""
    parts: dict[str, list[np.ndarray]] = {}
    first: dict[int, str] = {}
    for ticker, rows in rows_of.items():
        parts.setdefault(first.setdefault(id(networks[ticker]), ticker), []).append(rows)
    return {
        key: found[0] if len(found) == 1 else np.sort(np.concatenate(found))
        for key, found in parts.items()
    }


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

    @property
    def distributional(self) -> bool:
        """Whether the networks predict a scale too (and need the volatility)."""
        return any(outputs_of(network) == 2 for network in self.networks.values())

    def _groups(self, codes: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The rows of each network, from the rows' ticker codes (``_codes``)."""
        if not len(codes):
            return {}
        if GLOBAL in self.networks:
            return {GLOBAL: np.arange(len(codes))}
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        rows_of = {names[codes[rows[0]]]: rows for rows in np.split(order, bounds) if len(rows)}
        return _by_network(self.networks, rows_of)

    def _row_params(self, names: Sequence[str], codes: np.ndarray) -> Params:
        """Each row's scaler parameters, stacked (``stack_params``), looked up once per
        ticker rather than once per row."""
        rows = [self.params[name] for name in names]
        # The keys every ticker has (the scaler's); a missing long-run volatility is
        # reported by ``_feature``.
        keys = set.intersection(*(set(row) for row in rows)) if rows else set()
        stacked = stack_params([{key: row[key] for key in keys} for row in rows])
        return {key: values[codes] for key, values in stacked.items()}

    def predict_next(
        self, tickers: Sequence[str], windows: np.ndarray, volatility: np.ndarray | None = None
    ) -> np.ndarray:
        """The next close after each raw window ``(n, window)`` of the given tickers.

        Args:
            volatility: for a distributional network, the EWMA volatility at each
                window's last close (``pipeline.model.scale.ewma_volatility``).
        """
        return self.predict_distribution(tickers, windows, volatility)[0]

    def predict_distribution(
        self, tickers: Sequence[str], windows: np.ndarray, volatility: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The next close after each raw window, and the standard deviation of the
        next daily log return the network predicts (NaN for a point network).

        Raises:
            ValueError: the windows have the wrong shape, or a distributional network
                gets no ``volatility`` or lacks a ticker's long-run volatility.
        """
        predicted, spread, _ = self.predict_outputs(tickers, windows, volatility)
        return predicted, spread

    def predict_outputs(
        self, tickers: Sequence[str], windows: np.ndarray, volatility: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``predict_distribution``, and the networks' own outputs ``(n, outputs)`` in the
        scale they were trained in (before decoding and damping): what their loss is
        computed on (``network.network_loss``).

        Raises:
            ValueError: as ``predict_distribution``.
        """
        windows = np.asarray(windows, dtype=float)
        if windows.ndim != 2 or windows.shape[1] != self.window:
            raise ValueError(f"expected windows of shape (n, {self.window}), got {windows.shape}")
        names, codes = _codes(tickers)
        every = self._row_params(names, codes)
        result = np.empty(len(windows))
        spread = np.full(len(windows), np.nan)
        outputs = np.full((len(windows), 2), np.nan)
        for key, rows in self._groups(codes, names).items():
            params = {name: values[rows] for name, values in every.items()}
            encoded = self.scaler.encode(windows[rows], params)
            network = self.networks[key]
            two = outputs_of(network) == 2
            if two:
                encoded = np.stack(
                    [encoded, self._feature(names, codes[rows], windows[rows], volatility, rows)],
                    axis=-1,
                )
            predicted = _predict_all(network, encoded)
            outputs[rows, : 2 if two else 1] = predicted.reshape(len(rows), -1)
            if two:
                location, b = predicted[:, 0], network_scale(predicted[:, 1])
                result[rows] = self.scaler.decode(location, windows[rows], params)
                upper = self.scaler.decode(location + b, windows[rows], params)
                centre = np.maximum(result[rows], MINIMUM_SCALE)
                # Laplace: the standard deviation is sqrt(2) times the scale.
                spread[rows] = np.sqrt(2.0) * np.maximum(
                    np.log(np.maximum(upper, MINIMUM_SCALE) / centre), MINIMUM_SCALE
                )
            else:
                result[rows] = self.scaler.decode(predicted, windows[rows], params)
        factors = np.array([self.damping.get(name, 1.0) for name in names], dtype=float)[codes]
        width = 2 if np.isfinite(outputs[:, 1]).any() else 1
        return damped(result, windows[:, -1], factors), spread, outputs[:, :width]

    def encoded_targets(
        self, tickers: Sequence[str], windows: np.ndarray, targets: np.ndarray
    ) -> np.ndarray:
        """The closes ``targets`` after each raw window, in the scale the networks were
        trained to predict (``Scaler.encode_target``, with each ticker's parameters)."""
        windows = np.asarray(windows, dtype=float)
        names, codes = _codes(tickers)
        params = self._row_params(names, codes)
        return self.scaler.encode_target(np.asarray(targets, dtype=float), windows, params)

    def _feature(
        self,
        names: Sequence[str],
        codes: np.ndarray,
        windows: np.ndarray,
        volatility: np.ndarray | None,
        rows: np.ndarray,
    ) -> np.ndarray:
        if volatility is None:
            raise ValueError("a distributional network needs the volatility at each origin")
        used = np.unique(codes)
        missing = sorted(
            names[code] for code in used if VOLATILITY_PARAM not in self.params[names[code]]
        )
        if missing:
            raise ValueError(f"no long-run volatility for {', '.join(missing)}")
        long_run = np.zeros(len(names))
        long_run[used] = [self.params[names[code]][VOLATILITY_PARAM] for code in used]
        return volatility_feature(
            windows, np.asarray(volatility, float).reshape(-1)[rows], long_run[codes]
        )

    def predict_path(
        self,
        tickers: Sequence[str],
        windows: np.ndarray,
        horizon: int,
        volatility: np.ndarray | None = None,
    ) -> np.ndarray:
        """Closes for ``horizon`` steps, each prediction fed back as the newest input.

        Returns:
            An array ``(n, horizon)``.
        """
        return self.predict_paths(tickers, windows, horizon, volatility)[0]

    def predict_paths(
        self,
        tickers: Sequence[str],
        windows: np.ndarray,
        horizon: int,
        volatility: np.ndarray | None = None,
        first: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Closes ``(n, horizon)``, each prediction fed back as the newest input, and the
        standard deviation ``(n, horizon)`` of the log return from the last close to each
        step (NaN for a point network).

        A distributional network's volatility input is carried forward by the EWMA
        recursion with each step's expected squared log return (its location squared
        plus its variance); the spread of step ``h`` adds the steps' variances.

        Args:
            first: the first step already predicted for these windows, as
                ``predict_distribution`` gives it (closes, deviations): not predicted again.
        """
        current = np.asarray(windows, dtype=float).copy()
        path = np.empty((len(current), horizon))
        spread = np.full((len(current), horizon), np.nan)
        variance = None if volatility is None else np.asarray(volatility, float).reshape(-1) ** 2
        total = np.zeros(len(current))
        for step in range(horizon):
            sigma = None if variance is None else np.sqrt(variance)
            if step == 0 and first is not None:
                path[:, 0], deviation = first
            else:
                path[:, step], deviation = self.predict_distribution(tickers, current, sigma)
            total = total + deviation**2
            spread[:, step] = np.sqrt(total)
            if variance is not None and np.all(np.isfinite(deviation)):
                move = np.log(np.maximum(path[:, step], MINIMUM_SCALE) / current[:, -1])
                variance = EWMA_LAMBDA * variance + (1.0 - EWMA_LAMBDA) * (move**2 + deviation**2)
            current = np.concatenate([current[:, 1:], path[:, step : step + 1]], axis=1)
        return path, spread


def _codes(tickers: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct tickers, in order of first appearance, and each row's index among them."""
    codes, names = pd.factorize(np.asarray(tickers, dtype=object), sort=False)
    return [str(name) for name in names], codes.astype(np.intp)


@dataclass(frozen=True)
class VersionScaling:
    """How a registered version encodes its tickers' windows (``version_scaling``)."""

    window: int
    scaling: str
    params: dict[str, Params]
    damping: dict[str, float]


def version_scaling(
    model_row: Mapping[str, Any],
    scalers: Mapping[str, Mapping[str, Any]],
    tickers: Sequence[str],
) -> VersionScaling:
    """A registered version's window and scaling, and ``tickers``' scaler parameters and
    damping, from its registry row and its ``model_scalers`` rows (every ticker of a
    version has the same scaling; a version of no ticker has the one it was trained with).
    """
    scaling = {scalers[ticker]["scaling"] for ticker in tickers} or {
        model_row["hyperparameters"].get("scaling", "minmax")
    }
    (name,) = scaling
    return VersionScaling(
        window=int(model_row["hyperparameters"]["window"]),
        scaling=name,
        params={ticker: scalers[ticker]["scaler_params"] for ticker in tickers},
        damping={
            ticker: float(scalers[ticker]["damping"])
            for ticker in tickers
            if scalers[ticker].get("damping") is not None
        },
    )


def load_predictor(
    conn: Connection,
    model_row: Mapping[str, Any],
    tickers: Sequence[str] | None = None,
    *,
    scalers: Mapping[str, Mapping[str, Any]] | None = None,
) -> Predictor:
    """The predictor of a registered model version (for ``tickers``, default all it covers).

    Its networks are NumPy forward passes read from the model's files
    (``numpy_lstm``): they agree with Keras' to float32 rounding.

    Args:
        scalers: the version's ``model_scalers``, when the caller has read them already
            (the forecast stage: reading them again cost a tenth of it); read otherwise.
    """
    if scalers is None:
        scalers = model_scalers(conn, model_row["version"])
    wanted = sorted(tickers) if tickers is not None else sorted(scalers)
    encoding = version_scaling(model_row, scalers, wanted)
    # Read in NumPy (numpy_lstm): forecasting with a stored model imports no TensorFlow.
    path = check_files(model_row)
    networks = read_networks(path, None if path.is_file() else list(wanted))
    return Predictor(
        window=encoding.window,
        scaler=get_scaler(encoding.scaling),
        params=encoding.params,
        networks=networks,
        damping=encoding.damping,
    )
