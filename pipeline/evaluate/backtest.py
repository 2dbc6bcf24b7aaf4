"""Walk-forward backtests: every model refitted per fold, on that fold's training span only.

**Folds.** For each ticker, the last ``test_fraction`` of its closes are the
test span, cut into ``folds`` contiguous folds. Fold ``k`` starts at close
``t_k``: its training span is every close before ``t_k`` (``expanding``
origins) or the ``rolling_size`` closes before it (``rolling``). On that span
alone, each LSTM variant's scaler is fitted and its network trained (the span's
newest ``validation_fraction`` of windows validate, stop training early, and
calibrate the prediction intervals), and the AR(1) baseline is fitted. Then,
from every origin ``o`` in the fold (the last observed close), each model
forecasts closes ``o + 1 .. o + horizon`` using only closes up to ``o``.

**Metrics** per model, ticker, fold and horizon step (``pipeline.scoring.metrics``):
MAE, RMSE, MAPE, MASE (against the naive forecast on the same points and
step, so naive scores exactly 1.00); for models with prediction intervals
(at ``interval_level``), their coverage, their coverage on the ticker's most
volatile fifth of test days (``coverage_high_vol``: the days whose realised
volatility, the root mean square of the ``REALISED_VOL_DAYS`` daily log
returns ending on the target day, is in the top fifth of the ticker's test
span), their mean width relative to the last close, the interval score and
MSIS (scaled by the mean absolute daily change of the fold's training span);
for models with quantiles (``QUANTILE_LEVELS``), the scaled pinball loss of
each and their mean. Point baselines: ``naive``, ``drift`` (random walk with
drift) and ``ar1_log_returns``. Interval baselines, the naive forecast with
the spread a risk analyst would give it (``pipeline.evaluate.volatility``):
``naive_quantile`` (static empirical quantiles), ``naive_ewma`` (RiskMetrics)
and ``naive_garch`` (GARCH(1,1) Student-t, fitted per fold).

**Units.** A backtest is planned (``plan_backtest``: the folds of every
ticker), cut into independent units (``BacktestPlan.units``: per fold, the
baselines, and each variant), each unit computed on its own (``run_unit``:
a variant's unit seeds and trains its networks from scratch, so its points do
not depend on what ran before it or where), and the units' points merged in
plan order (``merge_units``). ``backtest`` does exactly that in one process;
a flow may run the units in parallel, on other machines, and merge the same
points.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import columns as c
from pipeline.evaluate.baselines import BASELINES, get_baseline
from pipeline.evaluate.variants import Variant
from pipeline.evaluate.volatility import INTERVAL_BASELINES, QUANTILE_LEVELS
from pipeline.files import write_atomically
from pipeline.model.fit import TrainingData, fit_networks, fresh_networks
from pipeline.model.network import is_distributional, seed_everything
from pipeline.model.predictor import Predictor
from pipeline.model.validation import (
    calibrate_intervals,
    fit_damping,
    origin_volatility,
    span_series,
    with_long_run_volatility,
)
from pipeline.scoring.metrics import naive_scale, quantile_name, summarise
from pipeline.sequences.build import minimum_closes, windows_frame
from pipeline.sequences.scaling import get_scaler

logger = logging.getLogger(__name__)

ORIGINS = ("expanding", "rolling")
#: Every baseline a backtest runs by default: point forecasts, then interval baselines.
DEFAULT_BASELINES = (*BASELINES, *INTERVAL_BASELINES)
#: Daily returns the realised volatility of a test day is measured over (it included).
REALISED_VOL_DAYS = 10
#: The share of each ticker's test days counted as its most volatile.
HIGH_VOL_SHARE = 0.2
#: The columns of the quantiles in the points (``q05`` .. ``q95``).
QUANTILE_COLUMNS = tuple(quantile_name(level) for level in QUANTILE_LEVELS)


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


@dataclass
class BacktestResult:
    """Every forecast point of a backtest and its metrics.

    ``points`` has one row per model, ticker, fold, origin and step: ``model``,
    ``ticker``, ``fold``, ``horizon``, ``origin_date``, ``target_date``, ``y``,
    ``yhat``, ``naive`` (the last close), ``lower`` and ``upper`` (the interval at
    ``level``; NaN for a model without one), ``scale`` (the predicted standard
    deviation of the log return to the target, NaN where none), the quantiles
    ``q05`` .. ``q95``, ``score_scale`` (the fold's mean absolute daily change,
    MSIS's denominator) and ``high_vol``.
    """

    points: pd.DataFrame
    defaults: dict[str, bool]
    level: float = 0.9

    def metrics(self, by_fold: bool = True) -> pd.DataFrame:
        """Metrics per model, ticker, (fold,) and horizon step."""
        keys = ["model", c.TICKER, "fold", c.HORIZON] if by_fold else ["model", c.TICKER, c.HORIZON]
        rows = []
        for key, group in self.points.groupby(keys, sort=True):
            has_interval = group["lower"].notna().all()
            quantiles = {
                level: group[name]
                for level, name in zip(QUANTILE_LEVELS, QUANTILE_COLUMNS, strict=True)
                if name in group and group[name].notna().all()
            }
            metrics = summarise(
                group["y"],
                group["yhat"],
                group["naive"],
                group["lower"] if has_interval else None,
                group["upper"] if has_interval else None,
                level=self.level,
                scale=group["score_scale"],
                quantiles=quantiles or None,
                high_vol=group["high_vol"],
            )
            rows.append({**dict(zip(keys, key, strict=True)), **metrics})
        frame = pd.DataFrame(rows)
        frame["is_default"] = [bool(self.defaults.get(name)) for name in frame["model"]]
        return frame

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per model, ticker and horizon step (folds pooled)."""
        records = []
        for row in self.metrics(by_fold=False).to_dict("records"):
            record: dict[str, Any] = {
                "model": row["model"],
                "ticker": row[c.TICKER],
                "horizon": int(row[c.HORIZON]),
            }
            for name in RECORD_METRICS:
                record[name] = _plain(row.get(name))
            for name in QUANTILE_COLUMNS:
                record[f"spl_{name}"] = _plain(row.get(f"spl_{name}"))
            record["n"] = int(row["n"])
            record["n_high_vol"] = None if pd.isna(row["n_high_vol"]) else int(row["n_high_vol"])
            record["default"] = bool(row["is_default"])
            records.append(record)
        return records

    def export_points(self) -> pd.DataFrame:
        """Every forecast point with what its metrics need, for ``write_points``."""
        points = self.points.copy()
        points.insert(1, "is_default", [bool(self.defaults.get(m)) for m in points["model"]])
        points["level"] = self.level
        return points

    def write_points(self, path: Path) -> Path:
        """Write every forecast point to ``path``: Parquet for ``.parquet``, else CSV.

        One row per model, ticker, fold, origin and step, with ``model``,
        ``is_default``, ``ticker``, ``fold``, ``horizon``, ``origin_date``,
        ``target_date``, ``y``, ``yhat``, ``naive`` (the last close), ``lower`` and
        ``upper`` (the interval at ``level``, empty for models without one), ``scale``,
        the quantiles ``q05`` .. ``q95``, ``score_scale`` (MSIS's denominator) and
        ``high_vol``: enough to recompute every metric of the backtest.
        """
        points = self.export_points()
        if path.suffix.lower() in (".parquet", ".pq"):
            write_atomically(path, lambda to: points.to_parquet(to, index=False), "backtest")
        else:
            write_atomically(
                path, lambda to: points.to_csv(to, index=False, float_format="%.10g"), "backtest"
            )
        return path

    def table(self) -> pd.DataFrame:
        """Per model and horizon step, across tickers: mean and worst MASE, and the means of
        coverage (overall and on the volatile days), relative width, MSIS and scaled
        pinball loss (NaN for models without intervals or quantiles)."""
        pooled = self.metrics(by_fold=False)
        grouped = pooled.groupby(["model", c.HORIZON])
        table = pd.DataFrame(
            {
                "mase_mean": grouped["mase"].mean(),
                "mase_max": grouped["mase"].max(),
                "worst_ticker": grouped.apply(
                    lambda g: g.loc[g["mase"].idxmax(), c.TICKER], include_groups=False
                ),
                "coverage": grouped["coverage"].mean(),
                "coverage_min": grouped["coverage"].min(),
                "coverage_max": grouped["coverage"].max(),
                "coverage_high_vol": grouped["coverage_high_vol"].mean(),
                "width": grouped["width"].mean(),
                "msis": grouped["msis"].mean(),
                "spl": grouped["spl"].mean(),
                "points": grouped["n"].sum(),
            }
        ).reset_index()
        table["default"] = [bool(self.defaults.get(name)) for name in table["model"]]
        return table.sort_values([c.HORIZON, "mase_mean"]).reset_index(drop=True)


#: The metrics of a JSON record, besides the per-quantile losses.
RECORD_METRICS = (
    "mase",
    "mae",
    "rmse",
    "mape",
    "coverage",
    "coverage_high_vol",
    "width",
    "interval_score",
    "msis",
    "spl",
)


def _plain(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _windows(closes: np.ndarray, origins: np.ndarray, window: int) -> np.ndarray:
    return np.stack([closes[origin - window + 1 : origin + 1] for origin in origins])


@dataclass(frozen=True)
class Spread:
    """A model's spread around its point forecasts, per origin ``(n, H)``.

    Attributes:
        lower: the interval's lower bounds at the backtest's level.
        upper: its upper bounds.
        scale: the predicted standard deviation of the log return to each target.
        quantiles: ``(n, H, len(QUANTILE_LEVELS))`` price quantiles.
    """

    lower: np.ndarray
    upper: np.ndarray
    scale: np.ndarray | None
    quantiles: np.ndarray


def _points(
    model: str,
    ticker: str,
    fold: Fold,
    dates: np.ndarray,
    closes: np.ndarray,
    origins: np.ndarray,
    predictions: np.ndarray,
    spread: Spread | None,
    high_vol: np.ndarray,
) -> pd.DataFrame:
    """Long rows (one per origin and step) of forecasts whose target exists."""
    horizon = predictions.shape[1]
    steps = np.arange(1, horizon + 1)
    targets = origins[:, None] + steps[None, :]
    valid = targets < len(closes)
    origin_grid = np.broadcast_to(origins[:, None], targets.shape)[valid]
    target_grid = targets[valid]
    frame = pd.DataFrame(
        {
            "model": model,
            c.TICKER: ticker,
            "fold": fold.index,
            c.HORIZON: np.broadcast_to(steps[None, :], targets.shape)[valid],
            "origin_date": dates[origin_grid],
            c.TARGET_DATE: dates[target_grid],
            "y": closes[target_grid],
            "yhat": predictions[valid],
            "naive": closes[origin_grid],
        }
    )
    missing = np.full(len(frame), np.nan)
    frame["lower"] = missing if spread is None else spread.lower[valid]
    frame["upper"] = missing if spread is None else spread.upper[valid]
    frame["scale"] = missing if spread is None or spread.scale is None else spread.scale[valid]
    for index, name in enumerate(QUANTILE_COLUMNS):
        frame[name] = missing if spread is None else spread.quantiles[..., index][valid]
    frame["score_scale"] = naive_scale(closes[fold.train_start : fold.test_start])
    frame["high_vol"] = high_vol[target_grid]
    return frame


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


def run_unit(
    plan: BacktestPlan,
    unit: BacktestUnit,
    variants: Sequence[Variant],
    baselines: Sequence[str] = DEFAULT_BASELINES,
) -> list[pd.DataFrame]:
    """The forecast points of one unit: its models' forecasts from every origin of its fold.

    Raises:
        ValueError: the unit's fold or variant is not in the plan.
    """
    if not 0 <= unit.fold < plan.config.folds:
        raise ValueError(f"fold {unit.fold} is outside the plan's {plan.config.folds} folds")
    if unit.variant is not None and not 0 <= unit.variant < len(variants):
        raise ValueError(f"variant {unit.variant} is outside the {len(variants)} variants")
    logger.info("backtest %s", unit.describe(variants))
    if unit.variant is not None:
        return _variant_fold(variants[unit.variant], plan, unit.fold)
    level = plan.config.interval_level
    bounds_levels = (round((1.0 - level) / 2, 9), round((1.0 + level) / 2, 9))
    wanted = tuple(sorted({*QUANTILE_LEVELS, *bounds_levels}))
    parts = []
    for name in baselines:
        for ticker, bounds in plan.folds.items():
            dates, closes = plan.prepared[ticker]
            fold = bounds[unit.fold]
            origins = np.arange(fold.test_start - 1, fold.test_end - 1)
            arguments = (
                closes,
                origins,
                plan.config.horizon,
                fold.train_start,
                fold.test_start - 1,
            )
            spread = None
            if name in INTERVAL_BASELINES:
                forecast = INTERVAL_BASELINES[name](*arguments, levels=wanted)
                at = {tau: forecast.quantiles[..., i] for i, tau in enumerate(wanted)}
                predictions = forecast.yhat
                spread = Spread(
                    lower=at[bounds_levels[0]],
                    upper=at[bounds_levels[1]],
                    scale=forecast.scale,
                    quantiles=np.stack([at[tau] for tau in QUANTILE_LEVELS], axis=-1),
                )
            else:
                predictions = get_baseline(name)(*arguments)
            parts.append(
                _points(
                    name,
                    ticker,
                    fold,
                    dates,
                    closes,
                    origins,
                    predictions,
                    spread,
                    plan.high_vol[ticker],
                )
            )
    return parts


def merge_units(
    parts: Sequence[Sequence[pd.DataFrame]], variants: Sequence[Variant], level: float
) -> BacktestResult:
    """The result of a backtest from its units' points, given in ``BacktestPlan.units`` order.

    Args:
        parts: each unit's points.
        variants: the LSTM variants of the backtest.
        level: the coverage its intervals aim for (``BacktestConfig.interval_level``).
    """
    points = pd.concat([frame for unit in parts for frame in unit], ignore_index=True)
    defaults = {variant.name: variant.is_default for variant in variants}
    return BacktestResult(points=points, defaults=defaults, level=level)


def backtest(
    series: Mapping[str, tuple[Sequence[dt.date], np.ndarray]],
    variants: Sequence[Variant],
    config: BacktestConfig,
    baselines: Sequence[str] = DEFAULT_BASELINES,
) -> BacktestResult:
    """Walk-forward backtest of LSTM variants and baselines (see the module docstring).

    Every unit runs here, one after the other; ``plan_backtest``, ``run_unit``
    and ``merge_units`` give the same result with the units run elsewhere.

    Args:
        series: per ticker, its trade dates and closes, oldest first, up to the as-of date.
        variants: the LSTM configurations to evaluate.
        config: folds, horizon, test share, origins and interval level.
        baselines: names in ``pipeline.evaluate.baselines.BASELINES`` or
            ``pipeline.evaluate.volatility.INTERVAL_BASELINES``.

    Raises:
        ValueError: no ticker is long enough for the folds.
    """
    plan = plan_backtest(series, variants, config)
    parts = [run_unit(plan, unit, variants, baselines) for unit in plan.units(variants)]
    return merge_units(parts, variants, config.interval_level)


def _variant_fold(variant: Variant, plan: BacktestPlan, index: int) -> list[pd.DataFrame]:
    """Train one variant on fold ``index``'s training spans and forecast its test span."""
    config = plan.config
    window = variant.sequence.window
    frames, params = {}, {}
    for ticker, bounds in plan.folds.items():
        dates, closes = plan.prepared[ticker]
        fold = bounds[index]
        span = slice(fold.train_start, fold.test_start)
        frame, description = windows_frame(
            ticker, list(dates[span]), closes[span], variant.sequence
        )
        frames[ticker] = frame
        params[ticker] = description["scaler_params"]
    spans = {ticker: span_series(frame, window) for ticker, frame in frames.items()}
    distributional = is_distributional(variant.model.loss)
    if distributional:
        params = with_long_run_volatility(params, spans)
    seed_everything(variant.model.seed)
    networks = fresh_networks(sorted(frames), window, variant.model)
    data = TrainingData(frames, params, window, variant.sequence.scaling, distributional)
    fitted = fit_networks(
        data,
        networks,
        variant.model,
        variant.model.epochs,
        None,
        f"{variant.name} fold {index + 1}",
    )
    predictor = Predictor(window, get_scaler(variant.sequence.scaling), params, fitted.networks)
    if variant.model.damping:
        predictor.damping = fit_damping(predictor, spans)
    intervals = calibrate_intervals(
        predictor, spans, config.horizon, config.interval_level, variant.model.intervals
    )
    parts = []
    for ticker, bounds in plan.folds.items():
        dates, closes = plan.prepared[ticker]
        fold = bounds[index]
        origins = np.arange(fold.test_start - 1, fold.test_end - 1)
        origins = origins[origins >= window - 1]
        if not len(origins):
            continue
        paths, network_spread = predictor.predict_paths(
            [ticker] * len(origins),
            _windows(closes, origins, window),
            config.horizon,
            origin_volatility(predictor, closes, origins),
        )
        calibration = intervals.get(ticker)
        spread = None
        if calibration is not None:
            scales = calibration.scales(closes, origins, network_spread, config.horizon)
            widths = calibration.half_widths(config.interval_level, scales, config.horizon)
            spread = Spread(
                lower=paths * np.exp(-widths),
                upper=paths * np.exp(widths),
                scale=scales,
                quantiles=calibration.quantiles(paths, scales, QUANTILE_LEVELS),
            )
        parts.append(
            _points(
                variant.name,
                ticker,
                fold,
                dates,
                closes,
                origins,
                paths,
                spread,
                plan.high_vol[ticker],
            )
        )
    return parts


def describe_variants(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    """JSON-ready parameters of each variant, for the runs table."""
    return [
        {
            "name": variant.name,
            "default": variant.is_default,
            "sequence": variant.sequence.to_dict(),
            "model": variant.model.to_dict(),
        }
        for variant in variants
    ]
