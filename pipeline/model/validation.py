"""Judge a model on the newest span: one-step errors against the naive forecast,
and prediction intervals calibrated on the same held-out windows.

The span is the validation split of the sequence files (the newest
``validation_fraction`` of each ticker's windows): no model trained on it, and
its scaler never saw it. Errors are in price units and pooled over every
validation point of every ticker; MASE is the model's MAE divided by the naive
forecast's (yesterday's close) on the same points, so naive scores 1.00.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline import columns as c
from pipeline.evaluate.intervals import fit_conformal
from pipeline.model.predictor import Predictor


@dataclass(frozen=True)
class SpanSeries:
    """One ticker's raw closes up to the as-of date and where its validation targets are."""

    closes: np.ndarray
    targets: np.ndarray  # positions in ``closes`` of the validation targets


def span_series(frame: pd.DataFrame, window: int) -> SpanSeries:
    """A ticker's closes and validation target positions, from its sequence file."""
    first = frame[c.raw_window_columns(window)].iloc[0].to_numpy(dtype=float)
    closes = np.concatenate([first, frame[c.TARGET_CLOSE].to_numpy(dtype=float)])
    validation = np.flatnonzero((frame[c.SPLIT] == c.SPLIT_VALIDATION).to_numpy())
    return SpanSeries(closes=closes, targets=validation + window)


@dataclass
class SpanErrors:
    """One-step errors on the validation span, per ticker and pooled."""

    per_ticker: dict[str, dict[str, float]] = field(default_factory=dict)

    def _sum(self, key: str) -> float:
        return sum(row[key] * row["n"] for row in self.per_ticker.values())

    @property
    def n(self) -> int:
        return int(sum(row["n"] for row in self.per_ticker.values()))

    @property
    def mae(self) -> float:
        return self._sum("mae") / self.n if self.n else float("nan")

    @property
    def naive_mae(self) -> float:
        return self._sum("naive_mae") / self.n if self.n else float("nan")

    @property
    def mase(self) -> float:
        naive = self.naive_mae
        return self.mae / naive if naive > 0 else float("nan")

    def restricted(self, tickers: set[str]) -> SpanErrors:
        """The errors of some tickers only."""
        return SpanErrors({t: row for t, row in self.per_ticker.items() if t in tickers})

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "mae": self.mae, "naive_mae": self.naive_mae, "mase": self.mase}


def _windows(closes: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Rows ``closes[end - window : end]`` for each ``end``."""
    return (
        np.stack([closes[end - window : end] for end in ends])
        if len(ends)
        else np.empty((0, window))
    )


#: Damping factors tried on the validation span.
DAMPING_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def _one_step(
    predictor: Predictor, series: Mapping[str, SpanSeries]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per ticker: actual closes, one-step predictions and naive forecasts, validation span."""
    names: list[str] = []
    windows, actual, naive = [], [], []
    for ticker, data in sorted(series.items()):
        if ticker not in predictor.params:
            continue
        ends = data.targets[data.targets >= predictor.window]
        if not len(ends):
            continue
        names.extend([ticker] * len(ends))
        windows.append(_windows(data.closes, ends, predictor.window))
        actual.append(data.closes[ends])
        naive.append(data.closes[ends - 1])
    if not names:
        return {}
    predicted = predictor.predict_next(names, np.concatenate(windows))
    actual_all, naive_all = np.concatenate(actual), np.concatenate(naive)
    tickers = np.array(names, dtype=object)
    return {
        ticker: (
            actual_all[tickers == ticker],
            predicted[tickers == ticker],
            naive_all[tickers == ticker],
        )
        for ticker in dict.fromkeys(names)
    }


def fit_damping(predictor: Predictor, series: Mapping[str, SpanSeries]) -> dict[str, float]:
    """Per ticker, the factor in ``DAMPING_GRID`` with the smallest one-step MAE on the
    validation span, shrinking predictions toward the last close (ties: the larger factor).

    The network's own predictions are used (any damping ``predictor`` has is ignored).
    """
    undamped = Predictor(predictor.window, predictor.scaler, predictor.params, predictor.networks)
    result = {}
    for ticker, (actual, predicted, naive) in _one_step(undamped, series).items():
        candidates = naive[None, :] + DAMPING_GRID[:, None] * (predicted - naive)[None, :]
        errors = np.abs(candidates - actual[None, :]).mean(axis=1)
        best = np.flatnonzero(errors <= errors.min() + 1e-12)[-1]
        result[ticker] = float(DAMPING_GRID[best])
    return result


def evaluate_span(predictor: Predictor, series: Mapping[str, SpanSeries]) -> SpanErrors:
    """One-step errors of ``predictor`` on each ticker's validation targets.

    Targets with fewer than ``predictor.window`` closes before them are left out.
    """
    errors = SpanErrors()
    for ticker, (actual, predicted, naive) in _one_step(predictor, series).items():
        mae = float(np.mean(np.abs(actual - predicted)))
        naive_mae = float(np.mean(np.abs(actual - naive)))
        errors.per_ticker[ticker] = {
            "n": len(actual),
            "mae": mae,
            "naive_mae": naive_mae,
            "mase": mae / naive_mae if naive_mae > 0 else float("nan"),
        }
    return errors


def calibrate_intervals(
    predictor: Predictor, series: Mapping[str, SpanSeries], horizon: int, level: float
) -> dict[str, list[float] | None]:
    """Per ticker, the multiplicative conformal half-widths of steps 1..``horizon``.

    From every validation origin with ``horizon`` closes after it, the
    predictor forecasts recursively and the log-ratio errors of each step are
    calibrated (``pipeline.evaluate.intervals.fit_conformal``). A ticker with
    too few origins for ``level`` gets ``None`` (no intervals).
    """
    result: dict[str, list[float] | None] = {}
    for ticker, data in sorted(series.items()):
        if ticker not in predictor.params:
            continue
        ends = data.targets[
            (data.targets >= predictor.window) & (data.targets + horizon <= len(data.closes))
        ]
        if not len(ends):
            result[ticker] = None
            continue
        paths = predictor.predict_path(
            [ticker] * len(ends), _windows(data.closes, ends, predictor.window), horizon
        )
        actual = np.stack([data.closes[end : end + horizon] for end in ends])
        quantiles = fit_conformal(actual, paths, level)
        result[ticker] = [float(q) for q in quantiles] if np.all(np.isfinite(quantiles)) else None
    return result
