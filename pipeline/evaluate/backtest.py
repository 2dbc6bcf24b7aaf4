"""Walk-forward backtests: every model refitted per fold, on that fold's training span only.

The folds and units come from the plan (``pipeline.evaluate.plan``). For each
fold, on its training span alone, each LSTM variant's scaler is fitted and its
network trained (the span's newest ``validation_fraction`` of windows
validate, stop training early, and calibrate the prediction intervals), and
the AR(1) baseline is fitted. Then, from every origin ``o`` in the fold (the
last observed close), each model forecasts closes ``o + 1 .. o + horizon``
using only closes up to ``o``. Point baselines: ``naive``, ``drift`` (random
walk with drift) and ``ar1_log_returns``. Interval baselines, the naive
forecast with the spread a risk analyst would give it
(``pipeline.evaluate.volatility``): ``naive_quantile`` (static empirical
quantiles), ``naive_ewma`` (RiskMetrics) and ``naive_garch`` (GARCH(1,1)
Student-t, fitted per fold).

**Units.** Each unit of the plan is computed on its own (``run_unit``: a
variant's unit seeds and trains its networks from scratch, so its points do
not depend on what ran before it or where), and the units' points are merged
in plan order (``merge_units``) into a ``pipeline.evaluate.scores.BacktestResult``,
which scores them. ``backtest`` does exactly that in one process; a flow may
run the units in parallel, on other machines, and merge the same points.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import columns as c
from pipeline.evaluate.baselines import BASELINES, get_baseline
from pipeline.evaluate.plan import BacktestConfig, BacktestPlan, BacktestUnit, Fold, plan_backtest
from pipeline.evaluate.scores import QUANTILE_COLUMNS, BacktestResult
from pipeline.evaluate.variants import Variant
from pipeline.evaluate.volatility import INTERVAL_BASELINES, QUANTILE_LEVELS
from pipeline.model.calibration import calibrate_intervals
from pipeline.model.fit import TrainingData, fit_networks, fresh_networks
from pipeline.model.network import is_distributional, seed_everything
from pipeline.model.predictor import Predictor
from pipeline.model.span import span_series, with_origin_volatility
from pipeline.model.validation import judge_span, origin_volatility, with_long_run_volatility
from pipeline.scoring.metrics import naive_scale
from pipeline.sequences.files import ticker_windows
from pipeline.sequences.scaling import get_scaler

logger = logging.getLogger(__name__)

#: Every baseline a backtest runs by default: point forecasts, then interval baselines.
DEFAULT_BASELINES = (*BASELINES, *INTERVAL_BASELINES)


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
    windows, params = {}, {}
    for ticker, bounds in plan.folds.items():
        dates, closes = plan.prepared[ticker]
        fold = bounds[index]
        span = slice(fold.train_start, fold.test_start)
        windows[ticker], description = ticker_windows(
            list(dates[span]), closes[span], variant.sequence
        )
        params[ticker] = description["scaler_params"]
    spans = {ticker: span_series(ticker_windows) for ticker, ticker_windows in windows.items()}
    distributional = is_distributional(variant.model.loss)
    if distributional or variant.model.intervals == "ewma":
        spans = with_origin_volatility(spans)
    if distributional:
        params = with_long_run_volatility(params, spans)
    seed_everything(variant.model.seed)
    networks = fresh_networks(sorted(windows), window, variant.model)
    data = TrainingData(windows, params, window, variant.sequence.scaling, distributional)
    fitted = fit_networks(
        data,
        networks,
        variant.model,
        variant.model.epochs,
        None,
        f"{variant.name} fold {index + 1}",
    )
    predictor = Predictor(window, get_scaler(variant.sequence.scaling), params, fitted.networks)
    judged = judge_span(predictor, spans, damp=variant.model.damping)
    predictor.damping = judged.damping
    intervals = calibrate_intervals(
        predictor,
        spans,
        config.horizon,
        config.interval_level,
        variant.model.intervals,
        judged.step,
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
