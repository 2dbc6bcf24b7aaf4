"""Sliding windows over one series."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def build_windows(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of ``window`` consecutive values and the value that follows each.

    Args:
        values: one series, oldest first.
        window: values per input.

    Returns:
        ``(x, y)`` with ``x`` of shape ``(len(values) - window, window)`` and
        ``y`` of shape ``(len(values) - window,)``; ``y[i] == values[i + window]``.
    """
    values = np.asarray(values, dtype=float)
    count = len(values) - window
    if count <= 0:
        return np.empty((0, window)), np.empty((0,))
    x = sliding_window_view(values, window)[:count].copy()
    y = values[window:].copy()
    return x, y


def split_counts(windows: int, validation_fraction: float) -> tuple[int, int]:
    """How many of a ticker's windows train and how many (the newest) validate.

    At least one window validates; the rest train.
    """
    validation = max(1, int(np.ceil(windows * validation_fraction)))
    return windows - validation, validation
