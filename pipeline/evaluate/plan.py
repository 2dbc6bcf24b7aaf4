"""The plan of a walk-forward backtest: its settings, every ticker's folds, and its units.

**Folds.** For each ticker, the last ``test_fraction`` of its closes are the
test span, cut into ``folds`` contiguous folds. Fold ``k`` starts at close
``t_k``: its training span is every close before ``t_k`` (``expanding``
origins) or the ``rolling_size`` closes before it (``rolling``). A ticker too
short for a training span that every variant can window is left out.

**Units.** A plan (``plan_backtest``) is cut into independent units
(``BacktestPlan.units``: per fold, the baselines, then each variant); the
runner (``pipeline.evaluate.backtest``) computes each unit on its own and
merges their points in this order.

**Volatile days.** The plan also flags each ticker's most volatile fifth of
test days (``high_volatility_days``), on which the intervals' coverage is
scored apart; only evaluation uses them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.evaluate.variants import Variant
from pipeline.sequences.build import minimum_closes

ORIGINS = ("expanding", "rolling")
#: Daily returns the realised volatility of a test day is measured over (it included).
REALISED_VOL_DAYS = 10
#: The share of each ticker's test days counted as its most volatile.
HIGH_VOL_SHARE = 0.2


@dataclass(frozen=True)
class BacktestConfig:
    """How a backtest cuts and scores each series.

    Attributes:
        folds: contiguous test folds per ticker.
        horizon: steps forecast from each origin.
        test_fraction: share of each ticker's closes in the test span.
        origins: ``expanding`` (train on everything before the fold) or ``rolling``.
        rolling_size: closes in a rolling training span (default: the first
            fold's training span).
        interval_level: coverage the LSTM's conformal intervals aim for.
    """

    folds: int = 5
    horizon: int = 1
    test_fraction: float = 0.2
    origins: str = "expanding"
    rolling_size: int | None = None
    interval_level: float = 0.9

    def __post_init__(self) -> None:
        if self.folds < 1 or self.horizon < 1:
            raise ValueError("folds and horizon must be at least 1")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.origins not in ORIGINS:
            raise ValueError(f"origins must be one of {ORIGINS}, got {self.origins!r}")


@dataclass(frozen=True)
class Fold:
    """One fold of one ticker, as positions in its close series."""

    index: int
    train_start: int
    test_start: int  # first target of the fold; the training span ends just before it
    test_end: int  # one past the last target of the fold


def fold_bounds(length: int, config: BacktestConfig, minimum_train: int) -> list[Fold]:
    """The folds of a series of ``length`` closes (none when it is too short)."""
    test = max(config.folds, math.ceil(length * config.test_fraction))
    first = length - test
    if first < minimum_train:
        return []
    edges = np.linspace(first, length, config.folds + 1).round().astype(int)
    size = config.rolling_size or first
    folds = []
    for index in range(config.folds):
        start = 0 if config.origins == "expanding" else max(0, int(edges[index]) - size)
        folds.append(Fold(index, start, int(edges[index]), int(edges[index + 1])))
    return folds


def high_volatility_days(closes: np.ndarray, first_test: int) -> np.ndarray:
    """Flags of the test days (positions from ``first_test``) in the most volatile fifth.

    A day's realised volatility is the root mean square of the ``REALISED_VOL_DAYS``
    daily log returns ending on it; the flagged days are those at or above the
    ``1 - HIGH_VOL_SHARE`` quantile of the test span's. Only evaluation uses it.
    """
    flags = np.zeros(len(closes), dtype=bool)
    squared = np.concatenate([[np.nan], np.diff(np.log(closes)) ** 2])
    realised = pd.Series(squared).rolling(REALISED_VOL_DAYS, min_periods=1).mean().to_numpy() ** 0.5
    test = realised[first_test:]
    if len(test):
        flags[first_test:] = test >= np.nanquantile(test, 1.0 - HIGH_VOL_SHARE)
    return flags


#: ``BacktestUnit.variant`` of a fold's baselines unit.
BASELINES_UNIT = None


@dataclass(frozen=True)
class BacktestUnit:
    """One independent piece of a backtest: one fold of the baselines, or of one variant.

    Attributes:
        fold: the fold's index, from 0.
        variant: the position of the variant in the backtest's variants, or
            ``None`` (``BASELINES_UNIT``) for every baseline.
    """

    fold: int
    variant: int | None = BASELINES_UNIT

    def describe(self, variants: Sequence[Variant]) -> str:
        """E.g. ``fold 2 default`` or ``fold 1 baselines``, for logs and task names."""
        name = "baselines" if self.variant is None else variants[self.variant].name
        return f"fold {self.fold + 1} {name}"


@dataclass(frozen=True)
class BacktestPlan:
    """The series of a backtest and every ticker's folds: all a unit needs."""

    prepared: dict[str, tuple[np.ndarray, np.ndarray]]  # ticker: (dates, closes)
    folds: dict[str, list[Fold]]  # only tickers long enough for the folds
    config: BacktestConfig
    high_vol: dict[str, np.ndarray]  # per ticker and close: in its most volatile test days

    def units(self, variants: Sequence[Variant]) -> list[BacktestUnit]:
        """Every unit, in the order their points are merged: per fold, the baselines,
        then each variant."""
        return [
            unit
            for index in range(self.config.folds)
            for unit in [
                BacktestUnit(index),
                *(BacktestUnit(index, number) for number in range(len(variants))),
            ]
        ]


def plan_backtest(
    series: Mapping[str, tuple[Sequence[dt.date], np.ndarray]],
    variants: Sequence[Variant],
    config: BacktestConfig,
) -> BacktestPlan:
    """The folds of each ticker (see the module docstring).

    Args:
        series: per ticker, its trade dates and closes, oldest first, up to the as-of date.
        variants: the LSTM configurations to evaluate (their windows set the shortest
            training span).
        config: folds, horizon, test share, origins and interval level.

    Raises:
        ValueError: no ticker is long enough for the folds.
    """
    prepared = {
        ticker: (np.asarray(pd.to_datetime(list(dates)).date), np.asarray(closes, dtype=float))
        for ticker, (dates, closes) in sorted(series.items())
    }
    longest_window = max([v.sequence.window for v in variants], default=2)
    minimum = max([minimum_closes(v.sequence) * 4 for v in variants] + [longest_window + 4, 8])
    folds = {
        ticker: fold_bounds(len(closes), config, minimum)
        for ticker, (_, closes) in prepared.items()
    }
    folds = {ticker: bounds for ticker, bounds in folds.items() if bounds}
    if not folds:
        raise ValueError(
            f"no ticker has enough closes for {config.folds} folds "
            f"(at least {minimum} training closes before the test span)"
        )
    high_vol = {
        ticker: high_volatility_days(prepared[ticker][1], bounds[0].test_start)
        for ticker, bounds in folds.items()
    }
    return BacktestPlan(prepared=prepared, folds=folds, config=config, high_vol=high_vol)
