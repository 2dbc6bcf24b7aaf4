"""The validation span: each ticker's closes and where its validation targets are
(``SpanSeries``, from its windows), and the points of many tickers stacked so that a
model is judged and calibrated on all of them in one forward pass (``Points``).

The span is the validation split of the sequence files (the newest
``validation_fraction`` of each ticker's windows): no model trained on it, and its
scaler never saw it. ``validation.py`` judges a model on it, ``calibration.py``
calibrates its intervals on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.model.predictor import Predictor
from pipeline.model.scale import ewma_volatility
from pipeline.scoring.intervals import conformal_rank
from pipeline.sequences.windows import TickerWindows


@dataclass(frozen=True)
class SpanSeries:
    """One ticker's raw closes up to the as-of date and where its validation targets are."""

    closes: np.ndarray
    targets: np.ndarray  # positions in ``closes`` of the validation targets

    @property
    def training_closes(self) -> np.ndarray:
        """The closes before the first validation target: the span the scaler saw
        (at least two, for a daily change)."""
        return self.closes[: max(2, int(self.targets.min()))]


def span_series(windows: TickerWindows) -> SpanSeries:
    """A ticker's closes and validation target positions, from its windows."""
    return SpanSeries(closes=windows.closes, targets=windows.validation_rows() + windows.window)


@dataclass(frozen=True)
class Points:
    """Validation points of many tickers at once, grouped by ticker.

    The points of ``names[k]`` are rows ``starts[k]:starts[k + 1]``, in the order of
    their targets; ``closes`` holds those tickers' closes one after the other,
    ``first`` the position of each point's ticker's first close in it, and ``ends``
    the position of each point's target. Per-ticker figures are grouped reductions
    over these rows (``sums``), never a Python loop over windows.
    """

    names: list[str]
    starts: np.ndarray
    closes: np.ndarray
    first: np.ndarray
    ends: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def owner(self) -> np.ndarray:
        """The index in ``names`` of each point's ticker."""
        return np.repeat(np.arange(len(self.names)), self.counts)

    def row_tickers(self) -> list[str]:
        return np.array(self.names, dtype=object)[self.owner].tolist()

    def windows(self, window: int) -> np.ndarray:
        """The ``window`` closes before each target, ``(n, window)``."""
        return self.closes[self.ends[:, None] + np.arange(-window, 0)[None, :]]

    def following(self, horizon: int) -> np.ndarray:
        """The target and the closes after it, ``(n, horizon)``."""
        return self.closes[self.ends[:, None] + np.arange(horizon)[None, :]]

    def volatility(self, predictor: Predictor) -> np.ndarray | None:
        """The EWMA volatility at each origin (the close before the target), when
        ``predictor`` needs it (``origin_volatility`` for all tickers at once)."""
        if not predictor.distributional:
            return None
        return ewma_volatility(self.closes, self.ends - 1, first=self.first)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per ticker, the sum of ``values`` over its points (along the first axis)."""
        return np.add.reduceat(values, self.starts[:-1], axis=0)

    def means(self, values: np.ndarray) -> np.ndarray:
        counts = self.counts
        return self.sums(values) / (counts if np.ndim(values) == 1 else counts[:, None])

    def quantile(self, scores: np.ndarray, level: float) -> np.ndarray:
        """Per ticker, ``conformal_quantile`` of its points' ``scores`` (``(n,)`` or
        ``(n, H)``): the same order statistic, every ticker sorted at once."""
        values = np.asarray(scores, dtype=float)
        flat = values.ndim == 1
        values = values.reshape(len(values), -1)
        counts = self.counts
        # NaN pads sort last, after the ticker's own values (NaN included), as alone.
        padded = np.full((len(self.names), int(counts.max()), values.shape[1]), np.nan)
        padded[self.owner, np.arange(len(values)) - np.repeat(self.starts[:-1], counts)] = values
        padded.sort(axis=1)
        ranks = np.array([conformal_rank(int(n), level) for n in counts])
        out = padded[np.arange(len(counts)), np.minimum(ranks, counts) - 1]
        out[ranks > counts] = np.inf
        return out[:, 0] if flat else out


def stack_points(
    predictor: Predictor, series: Mapping[str, SpanSeries], horizon: int = 0
) -> tuple[Points | None, list[str]]:
    """The validation points of every ticker ``predictor`` knows, stacked (``Points``;
    None when there are none), and the tickers left without a point. A point needs
    ``predictor.window`` closes before its target and, with a ``horizon``, the
    ``horizon - 1`` closes after it."""
    names, empty, pieces, ends, first = [], [], [], [], []
    offset = 0
    for ticker, data in sorted(series.items()):
        if ticker not in predictor.params:
            continue
        keep = data.targets >= predictor.window
        if horizon:
            keep &= data.targets + horizon <= len(data.closes)
        targets = data.targets[keep]
        if not len(targets):
            empty.append(ticker)
            continue
        names.append(ticker)
        pieces.append(data.closes)
        ends.append(targets + offset)
        first.append(np.full(len(targets), offset))
        offset += len(data.closes)
    if not names:
        return None, empty
    ends_all = np.concatenate(ends).astype(np.intp)
    points = Points(
        names=names,
        starts=np.concatenate([[0], np.cumsum([len(e) for e in ends])]).astype(np.intp),
        closes=np.concatenate(pieces).astype(float),
        first=np.concatenate(first).astype(np.intp),
        ends=ends_all,
    )
    return points, empty
