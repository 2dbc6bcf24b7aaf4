"""Sliding windows over one series."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.columns import (
    SPLIT,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
    TARGET_CLOSE,
    TARGET_DATE,
    raw_window_columns,
)


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


#: Each split label's code (``training_count``); ``NO_SPLIT`` for anything else.
SPLIT_CODES = {SPLIT_TRAIN: 0, SPLIT_VALIDATION: 1}
NO_SPLIT = 2


def split_codes(labels: np.ndarray) -> np.ndarray:
    """Each split label's code (``SPLIT_CODES``; ``NO_SPLIT`` for anything else)."""
    labels = np.asarray(labels, dtype=object)
    return np.where(
        labels == SPLIT_TRAIN,
        SPLIT_CODES[SPLIT_TRAIN],
        np.where(labels == SPLIT_VALIDATION, SPLIT_CODES[SPLIT_VALIDATION], NO_SPLIT),
    )


def training_count(codes: np.ndarray, where: str = "the windows") -> int:
    """How many windows train, from each window's split as a code (``SPLIT_CODES``).

    Raises:
        ValueError: the split is not the training windows then the validation ones (a
            label neither, or out of order).
    """
    n_train = int(np.count_nonzero(codes == SPLIT_CODES[SPLIT_TRAIN]))
    if (codes[:n_train] != SPLIT_CODES[SPLIT_TRAIN]).any() or (
        codes[n_train:] != SPLIT_CODES[SPLIT_VALIDATION]
    ).any():
        raise ValueError(f"{where}: the split is not the training windows then the validation ones")
    return n_train


@dataclass(frozen=True)
class TickerWindows:
    """One ticker's windows in the least memory, as training and judging use them.

    A sequence file holds every window twice (scaled and raw) and three text or
    date columns a row: about 1 MB for a ticker of ten years as a data frame. The
    windows are the ticker's closes seen through a sliding view, so this keeps the
    closes (window ``i`` is ``closes[i : i + window]``, its target
    ``closes[i + window]``), each window's target date, and how many of the oldest
    windows train (the rest, the newest, validate): about 30 kB for the same ticker.
    """

    closes: np.ndarray  # float64, ``len(target_dates) + window`` closes, oldest first
    target_dates: np.ndarray  # datetime64[D], one per window
    n_train: int
    window: int

    def __len__(self) -> int:
        return len(self.target_dates)

    @property
    def n_validation(self) -> int:
        return len(self) - self.n_train

    def train_rows(self, newer_than: dt.date | None = None) -> np.ndarray:
        """The training windows, or those whose target is after ``newer_than``."""
        rows = np.arange(self.n_train)
        if newer_than is None:
            return rows
        return rows[self.target_dates[: self.n_train] > np.datetime64(newer_than, "D")]

    def validation_rows(self) -> np.ndarray:
        return np.arange(self.n_train, len(self))

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """The raw closes of the windows ``rows``, shape ``(len(rows), window)`` (a copy)."""
        return sliding_window_view(self.closes, self.window)[np.asarray(rows, dtype=np.intp)]

    def targets(self, rows: np.ndarray) -> np.ndarray:
        """The raw close that follows each window of ``rows``."""
        return self.closes[np.asarray(rows, dtype=np.intp) + self.window]

    def train_through(self) -> dt.date | None:
        """The newest training target's date (``None``: no training window)."""
        if not self.n_train:
            return None
        return self.target_dates[self.n_train - 1].astype(dt.date)

    @classmethod
    def from_columns(
        cls,
        inputs: np.ndarray,
        targets: np.ndarray,
        target_dates: np.ndarray,
        split: Sequence[str],
        window: int,
        where: str = "the windows",
    ) -> TickerWindows:
        """From a sequence file's columns: raw inputs (the first of ``p0`` ..
        ``p{window-1}``, shape ``(n, k)``: ``p0`` alone is enough unless there are fewer
        windows than ``window``), target closes, target dates and split labels.

        Raises:
            ValueError: the inputs are not the windows of the closes they are followed
                by, or the split is not training windows then validation windows.
        """
        n_train = training_count(split_codes(split), where)
        return cls.from_training_count(inputs, targets, target_dates, n_train, window, where)

    @classmethod
    def from_training_count(
        cls,
        inputs: np.ndarray,
        targets: np.ndarray,
        target_dates: np.ndarray,
        n_train: int,
        window: int,
        where: str = "the windows",
    ) -> TickerWindows:
        """``from_columns`` with the split already counted: the oldest ``n_train``
        windows train (the caller checked the split's order).

        Raises:
            ValueError: the inputs are not the windows of the closes they are followed by.
        """
        inputs = np.asarray(inputs, dtype=float)
        targets = np.asarray(targets, dtype=float)
        count, given = inputs.shape
        # Window i is closes i .. i + window - 1 and its target close i + window: the
        # oldest input of each window, then the last ``window`` targets, are every close.
        if count >= window:
            closes = np.concatenate([inputs[:, 0], targets[count - window :]])
        elif given == window:
            closes = np.concatenate([inputs[0], targets]) if count else np.empty(0)
        else:
            raise ValueError(f"{where}: {count} windows need all {window} input columns")
        # With the oldest inputs alone (``given == 1``) they are the closes' first
        # ``count`` by construction: only the targets can disagree.
        if (
            given > 1
            and not np.array_equal(sliding_window_view(closes, window)[:count, :given], inputs)
        ) or not np.array_equal(closes[window : window + count], targets):
            raise ValueError(f"{where}: the inputs are not the windows of the closes")
        return cls(
            closes=closes,
            target_dates=np.asarray(target_dates, dtype="datetime64[D]"),
            n_train=n_train,
            window=window,
        )

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, window: int, where: str = "the windows"
    ) -> TickerWindows:
        """From a sequence file read as a data frame (``files.windows_frame``)."""
        return cls.from_columns(
            frame[raw_window_columns(window)].to_numpy(dtype=float),
            frame[TARGET_CLOSE].to_numpy(dtype=float),
            frame[TARGET_DATE].to_numpy(dtype="datetime64[D]"),
            frame[SPLIT].to_numpy(),
            window,
            where,
        )
