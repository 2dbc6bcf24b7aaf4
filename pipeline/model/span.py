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
from functools import cached_property

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
    #: The EWMA volatility at each target's origin (the close before it), when computed
    #: ahead (``with_origin_volatility``); judging and calibration compute it otherwise.
    volatility: np.ndarray | None = None

    @property
    def training_closes(self) -> np.ndarray:
        """The closes before the first validation target: the span the scaler saw
        (at least two, for a daily change)."""
        return self.closes[: max(2, int(self.targets.min()))]


def span_series(windows: TickerWindows) -> SpanSeries:
    """A ticker's closes and validation target positions, from its windows."""
    return SpanSeries(closes=windows.closes, targets=windows.validation_rows() + windows.window)


def with_origin_volatility(series: Mapping[str, SpanSeries]) -> dict[str, SpanSeries]:
    """Each ticker's span with the EWMA volatility at each target's origin, computed for
    every ticker at once (as ``Points.ewma`` computes it: the same values). A fine-tune
    day judged the champion, judged the new network and calibrated its intervals on the
    same origins, computing it each time (0.7 s a time at 1,000 tickers of ten years);
    a target without a close before it gets NaN."""
    names = sorted(series)
    if not names or any(len(series[name].closes) < 2 for name in names):
        return dict(series)  # too short for an origin with a return before it: left to Points
    pieces, origins, first = [], [], []
    offset = 0
    for name in names:
        data = series[name]
        targets = np.asarray(data.targets, dtype=np.intp)
        pieces.append(np.asarray(data.closes, dtype=float))
        origins.append(np.maximum(targets, 2) - 1 + offset)
        first.append(np.full(len(targets), offset, dtype=np.intp))
        offset += len(data.closes)
    ends = np.concatenate(origins)
    volatility = ewma_volatility(np.concatenate(pieces), ends, first=np.concatenate(first))
    result, start = {}, 0
    for name in names:
        data = series[name]
        values = volatility[start : start + len(data.targets)].copy()
        values[np.asarray(data.targets) < 1] = np.nan
        result[name] = SpanSeries(data.closes, data.targets, values)
        start += len(data.targets)
    return result


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
    #: The EWMA volatility at each origin, when the spans carried it.
    known_ewma: np.ndarray | None = None

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def owner(self) -> np.ndarray:
        """The index in ``names`` of each point's ticker."""
        return np.repeat(np.arange(len(self.names)), self.counts)

    def row_tickers(self, rows: np.ndarray | None = None) -> list[str]:
        """Each point's ticker (of the points ``rows`` only, when given)."""
        owner = self.owner if rows is None else self.owner[rows]
        return np.array(self.names, dtype=object)[owner].tolist()

    def windows(self, window: int, rows: np.ndarray | None = None) -> np.ndarray:
        """The ``window`` closes before each target, ``(n, window)`` (of the points
        ``rows`` only, when given)."""
        ends = self.ends if rows is None else self.ends[rows]
        return self.closes[ends[:, None] + np.arange(-window, 0)[None, :]]

    def following(self, horizon: int) -> np.ndarray:
        """The target and the closes after it, ``(n, horizon)``."""
        return self.closes[self.ends[:, None] + np.arange(horizon)[None, :]]

    @cached_property
    def ewma(self) -> np.ndarray:
        """The EWMA volatility at each origin (the close before the target): the one the
        spans carried (``with_origin_volatility``), or computed once for all tickers."""
        if self.known_ewma is not None:
            return self.known_ewma
        return ewma_volatility(self.closes, self.ends - 1, first=self.first)

    def volatility(self, predictor: Predictor) -> np.ndarray | None:
        """The EWMA volatility at each origin when ``predictor`` needs it
        (``origin_volatility`` for all tickers at once)."""
        return self.ewma if predictor.distributional else None

    def rows_in(self, other: Points) -> np.ndarray | None:
        """The row of ``other`` that holds each of these points (same ticker, same
        target; both stacked from the same spans), or None when one is not there."""
        index = {name: k for k, name in enumerate(other.names)}
        if not len(self.ends) or any(name not in index for name in self.names):
            return None
        base = int(max((self.ends - self.first).max(), (other.ends - other.first).max())) + 1
        theirs = other.owner.astype(np.int64) * base + (other.ends - other.first)
        mine = np.array([index[name] for name in self.names], dtype=np.int64)[self.owner]
        mine = mine * base + (self.ends - self.first)
        if len(theirs) > 1 and not np.all(np.diff(theirs) > 0):
            return None
        rows = np.minimum(np.searchsorted(theirs, mine), len(theirs) - 1)
        return rows if np.array_equal(theirs[rows], mine) else None

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


@dataclass(frozen=True)
class SpanStep:
    """A model's one-step predictions at every point of ``points``: the actual closes,
    its predictions, the naive forecasts (each point's last close) and the standard
    deviation of the log return it predicted (NaN for a point network); ``outputs``,
    when kept, the networks' own outputs (``Predictor.predict_outputs``)."""

    points: Points
    actual: np.ndarray
    predicted: np.ndarray
    naive: np.ndarray
    spread: np.ndarray
    outputs: np.ndarray | None = None


def stack_points(
    predictor: Predictor, series: Mapping[str, SpanSeries], horizon: int = 0
) -> tuple[Points | None, list[str]]:
    """The validation points of every ticker ``predictor`` knows, stacked (``Points``;
    None when there are none), and the tickers left without a point. A point needs
    ``predictor.window`` closes before its target and, with a ``horizon``, the
    ``horizon - 1`` closes after it."""
    names, empty, pieces, ends, first, known = [], [], [], [], [], []
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
        known.append(None if data.volatility is None else data.volatility[keep])
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
        known_ewma=None if any(v is None for v in known) else np.concatenate(known),
    )
    return points, empty
