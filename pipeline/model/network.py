"""The network: the seed's ``LSTM(units)`` then ``Dense(1)``, compiled with adam and mse.

Keras and TensorFlow are imported lazily so that stages without a model
(ingest, sequences) start quickly.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

# TensorFlow's C++ logging: errors surface as Python exceptions anyway.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@functools.cache
def import_keras() -> ModuleType:
    """Import TensorFlow and Keras once, without their start-up chatter.

    TensorFlow writes notices (oneDNN, CUDA probing) straight to file
    descriptor 2 while it starts, before its own log level applies; they are
    discarded. Exceptions still propagate.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return keras


def seed_everything(seed: int) -> None:
    """Reset Keras' global state, then seed Python, NumPy and TensorFlow and make
    TensorFlow's ops deterministic. Call it right before building or loading the
    networks of one training, so nothing left by earlier models changes the draw."""
    keras = import_keras()
    import tensorflow as tf

    keras.backend.clear_session()
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(
    window: int, units: int, learning_rate: float, loss: str = "mse", seed: int = 0
) -> keras.Model:
    """A fresh, compiled network for windows of ``window`` scaled closes.

    Every initializer gets its own seed derived from ``seed``, so the initial
    weights never depend on Python's global random state, which other threads
    of the process (Prefect's, for one) may draw from. Call ``seed_everything``
    before the first network of a training.
    """
    keras = import_keras()
    init = keras.initializers
    model = keras.Sequential(
        [
            keras.Input(shape=(window, 1)),
            keras.layers.LSTM(
                units,
                kernel_initializer=init.GlorotUniform(seed=seed),
                recurrent_initializer=init.Orthogonal(seed=seed + 1),
            ),
            keras.layers.Dense(1, kernel_initializer=init.GlorotUniform(seed=seed + 2)),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=loss)
    return model


def epoch_logger(total: int, label: str) -> Any:
    """A Keras callback that logs each epoch's losses and duration (the progress of training)."""
    keras = import_keras()

    class _EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            losses = ", ".join(f"{name} {value:.6f}" for name, value in sorted(logs.items()))
            logger.info(
                "%s epoch %d/%d: %s (%.1f s)",
                label,
                epoch + 1,
                total,
                losses,
                time.perf_counter() - self._started,
            )

    return _EpochLogger()


def early_stopping(patience: int) -> Any:
    """Stop when the validation loss has not improved for ``patience`` epochs; keep the best."""
    keras = import_keras()
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )


def as_inputs(x: np.ndarray) -> np.ndarray:
    """Windows ``(n, window)`` as the network's input ``(n, window, 1)`` in float32."""
    return np.asarray(x, dtype=np.float32)[..., np.newaxis]
