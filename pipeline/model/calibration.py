"""Prediction intervals calibrated on the validation span: how each ticker's
intervals are drawn around its forecasts (``IntervalCalibration``, stored with the
model in ``model_tickers.interval_q``) and fitted (``calibrate_intervals``) from
every validation origin's recursive forecast path, as conformal scores.
``stack_calibrations`` groups many tickers' calibrations so that their intervals are
drawn for all of them at once (the forecast stage).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.model.predictor import Predictor
from pipeline.model.scale import (
    EWMA_WEIGHT,
    blended_volatility,
    ewma_volatility,
    long_run_volatility,
    predicted_volatility,
    step_scales,
)
from pipeline.model.span import SpanSeries, SpanStep, stack_points
from pipeline.scoring.intervals import _positive_matrix

#: Central intervals every model calibrates besides its configured level: with the
#: median they give the fan chart's quantiles 5, 25, 50, 75 and 95 %.
FAN_CENTRAL_LEVELS = (0.5, 0.9)


def _level_key(level: float) -> str:
    return f"{round(float(level), 9):g}"


def _spread_scales(method: str, spread: np.ndarray | None, horizon: int) -> np.ndarray | None:
    """The scales of ``static`` (None) and ``network`` intervals (the spreads the network
    predicted, ``(n, horizon)``), which need no closes.

    Raises:
        ValueError: a network interval lacks the network's spread.
    """
    if method == "static":
        return None
    if spread is None or not np.all(np.isfinite(spread)):
        raise ValueError("network intervals need the spread the network predicted")
    return np.asarray(spread, dtype=float)[:, :horizon]


def _covers(calibrated: Collection[str], quantile_levels: tuple[float, ...]) -> bool:
    """Whether every quantile level's central interval is among the ``calibrated``
    coverages (``_level_key``); the median needs none."""
    return all(
        abs(tau - 0.5) < 1e-12 or _level_key(abs(2.0 * tau - 1.0)) in calibrated
        for tau in quantile_levels
    )


def _step_factors(known: np.ndarray, horizon: int, method: str) -> np.ndarray:
    """Multipliers ``(rows, calibrated steps)`` for steps 1..``horizon`` ``(rows,
    horizon)``: steps past the calibrated ones reuse the last multiplier, widened by
    ``sqrt(h / calibrated)`` for ``static`` intervals (``IntervalCalibration``)."""
    steps = np.arange(1, horizon + 1)
    last = known.shape[1]
    extra = known[:, -1:] * (np.sqrt(steps / last) if method == "static" else 1.0)
    return np.where(steps <= last, known[:, np.minimum(steps, last) - 1], extra)


def _scaled_widths(
    method: str, factors: np.ndarray, scales: np.ndarray | None, horizon: int
) -> np.ndarray:
    """Half-widths of ``network`` and ``ewma`` intervals: ``factors`` times each
    forecast's scales ``(n, horizon)``.

    Raises:
        ValueError: no scales were given.
    """
    if scales is None:
        raise ValueError(f"{method} intervals need the scale of each forecast")
    return factors * np.asarray(scales, dtype=float)[:, :horizon]


def _quantiles(
    half_widths: Callable[[float, np.ndarray | None, int], np.ndarray],
    paths: np.ndarray,
    scales: np.ndarray | None,
    levels: tuple[float, ...],
) -> np.ndarray:
    """Price quantiles ``(n, horizon, len(levels))`` around forecast paths ``(n, horizon)``,
    each level's central interval drawn by ``half_widths`` (one calibration's or a stack's)."""
    paths = np.asarray(paths, dtype=float)
    out = np.empty((*paths.shape, len(levels)))
    for index, tau in enumerate(levels):
        if abs(tau - 0.5) < 1e-12:
            out[..., index] = paths
            continue
        width = half_widths(abs(2.0 * tau - 1.0), scales, paths.shape[1])
        out[..., index] = paths * np.exp(np.sign(tau - 0.5) * width)
    return out


@dataclass(frozen=True)
class IntervalCalibration:
    """How one ticker's prediction intervals are drawn around its forecasts.

    The half-width of step ``h``, in log space, is ``m_c[h] * s[h]`` for a central
    interval of coverage ``c``: with ``method`` ``network``, ``s`` is the spread the
    distributional network predicts for the path (``Predictor.predict_paths``); with
    ``ewma``, the predicted scale (``pipeline.model.scale``: EWMA volatility at the
    origin times ``sqrt(h)``); ``m_c`` are then the normalised conformal multipliers.
    With ``static``, ``s`` is 1 and ``m_c`` the conformal half-widths themselves.
    Steps past the calibrated ones reuse the last multiplier (``network``, ``ewma``:
    the scale already grows with the step) or widen it by ``sqrt(h / calibrated)``
    (``static``, as a random walk's spread does).

    Attributes:
        method: ``network``, ``ewma`` or ``static``.
        multipliers: per central coverage, one multiplier per calibrated step.
        long_run: ``ewma``: the ticker's long-run volatility over the training span
            (``pipeline.model.scale.long_run_volatility``), part of its scale.
    """

    method: str
    multipliers: dict[float, list[float]]
    long_run: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The form stored in ``model_tickers.interval_q``."""
        return {
            "method": self.method,
            "multipliers": {_level_key(c): list(m) for c, m in sorted(self.multipliers.items())},
            "long_run": self.long_run,
        }

    def scales(
        self,
        closes: np.ndarray,
        origins: np.ndarray,
        spread: np.ndarray | None,
        horizon: int,
    ) -> np.ndarray | None:
        """The scale ``(n, horizon)`` of each forecast's steps, or None (``static``).

        Args:
            closes: the ticker's closes, oldest first.
            origins: positions in ``closes`` of each forecast's last close.
            spread: the network's predicted spreads ``(n, horizon)`` (``network``).
            horizon: steps.
        """
        if self.method in ("static", "network"):
            return _spread_scales(self.method, spread, horizon)
        return step_scales(predicted_volatility(closes, origins, self.long_run), horizon)

    @classmethod
    def from_json(cls, value: Any, level: float) -> IntervalCalibration | None:
        """Read ``model_tickers.interval_q``; a plain list (models before the ``ewma``
        method) is the static half-widths of ``level``."""
        if not value:
            return None
        if isinstance(value, list):
            return cls("static", {float(level): [float(q) for q in value]})
        long_run = value.get("long_run")
        return cls(
            str(value["method"]),
            {float(c): [float(q) for q in m] for c, m in value["multipliers"].items()},
            None if long_run is None else float(long_run),
        )

    def covers(self, quantile_levels: tuple[float, ...]) -> bool:
        """Whether every quantile level's central interval was calibrated."""
        return _covers({_level_key(c) for c in self.multipliers}, quantile_levels)

    def _factors(self, level: float, horizon: int) -> np.ndarray:
        known = next(
            (
                np.asarray(m, dtype=float)
                for c, m in self.multipliers.items()
                if _level_key(c) == _level_key(level)
            ),
            None,
        )
        if known is None:
            calibrated = sorted(self.multipliers)
            raise ValueError(
                f"no interval calibrated at coverage {level}; calibrated: {calibrated}"
            )
        return _step_factors(known[None, :], horizon, self.method)

    def half_widths(self, level: float, scales: np.ndarray | None, horizon: int) -> np.ndarray:
        """Log half-widths ``(n, horizon)`` of the central interval of coverage ``level``.

        Args:
            level: the coverage, one of the calibrated ones.
            scales: per forecast and step, from ``scales`` (``(n, horizon)``); ignored
                by ``static``, which gives one row when it is None.
            horizon: steps.
        """
        factors = self._factors(level, horizon)
        if self.method == "static":
            return factors if scales is None else np.repeat(factors, len(scales), 0)
        return _scaled_widths(self.method, factors, scales, horizon)

    def quantiles(
        self, paths: np.ndarray, scales: np.ndarray | None, levels: tuple[float, ...]
    ) -> np.ndarray:
        """Price quantiles ``(n, horizon, len(levels))`` around forecast paths ``(n, horizon)``."""
        return _quantiles(self.half_widths, paths, scales, levels)


@dataclass(frozen=True)
class CalibrationStack:
    """Several tickers' calibrations of one method and shape, one row each
    (``stack_calibrations``): ``scales``, ``half_widths`` and ``quantiles`` give, row by
    row, exactly what each ticker's ``IntervalCalibration`` gives (the same operations
    on the same numbers), for every row at once.

    Attributes:
        method: ``network``, ``ewma`` or ``static``.
        multipliers: per central coverage (``_level_key``), the multipliers ``(n, steps)``.
        levels: the calibrated coverages (for ``covers`` and error messages).
        long_run: ``ewma``: the tickers' long-run volatilities ``(n,)``, or None for
            calibrations without one (the EWMA alone).
    """

    method: str
    multipliers: dict[str, np.ndarray]
    levels: tuple[float, ...]
    long_run: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.multipliers.values())))

    def scales(
        self, closes: Sequence[np.ndarray], spread: np.ndarray | None, horizon: int
    ) -> np.ndarray | None:
        """The scale ``(n, horizon)`` of each row's forecast, or None (``static``).

        Args:
            closes: per row, its ticker's closes, oldest first, the forecast made at
                the last.
            spread: the network's predicted spreads ``(n, horizon)`` (``network``).
            horizon: steps.
        """
        if self.method in ("static", "network"):
            return _spread_scales(self.method, spread, horizon)
        lengths = np.array([len(values) for values in closes])
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        ewma = ewma_volatility(np.concatenate(closes), first + lengths - 1, first=first)
        return step_scales(blended_volatility(ewma, self.long_run), horizon)

    def covers(self, quantile_levels: tuple[float, ...]) -> bool:
        """Whether every quantile level's central interval was calibrated."""
        return _covers(self.multipliers.keys(), quantile_levels)

    def _factors(self, level: float, horizon: int) -> np.ndarray:
        known = self.multipliers.get(_level_key(level))
        if known is None:
            calibrated = sorted(self.levels)
            raise ValueError(
                f"no interval calibrated at coverage {level}; calibrated: {calibrated}"
            )
        return _step_factors(known, horizon, self.method)

    def half_widths(self, level: float, scales: np.ndarray | None, horizon: int) -> np.ndarray:
        """Log half-widths ``(n, horizon)`` of the central interval of coverage ``level``
        (``scales``: from ``scales``, None for ``static``)."""
        factors = self._factors(level, horizon)
        if self.method == "static":
            return factors
        return _scaled_widths(self.method, factors, scales, horizon)

    def quantiles(
        self, paths: np.ndarray, scales: np.ndarray | None, levels: tuple[float, ...]
    ) -> np.ndarray:
        """Price quantiles ``(n, horizon, len(levels))`` around forecast paths ``(n, horizon)``."""
        return _quantiles(self.half_widths, paths, scales, levels)


def stack_calibrations(
    calibrations: Sequence[IntervalCalibration | None],
) -> list[tuple[np.ndarray, CalibrationStack]]:
    """Calibrations grouped by method and shape (the coverages calibrated and the steps
    of each; with a long-run volatility or not), each group's positions in
    ``calibrations`` and its ``CalibrationStack``; None (no intervals) left out."""
    groups: dict[tuple[Any, ...], list[tuple[int, IntervalCalibration, dict[str, list]]]] = {}
    for position, calibration in enumerate(calibrations):
        if calibration is None:
            continue
        by_key: dict[str, list[float]] = {}
        for central, values in calibration.multipliers.items():
            by_key.setdefault(_level_key(central), values)  # the first, as ``_factors``
        shape = tuple((key, len(values)) for key, values in by_key.items())
        key = (calibration.method, shape, calibration.long_run is None)
        groups.setdefault(key, []).append((position, calibration, by_key))
    stacks = []
    for (method, shape, no_long_run), members in groups.items():
        stack = CalibrationStack(
            method,
            {
                key: np.array([by_key[key] for _, _, by_key in members], dtype=float)
                for key, _ in shape
            },
            tuple(float(central) for central in members[0][1].multipliers),
            None if no_long_run else np.array([cal.long_run for _, cal, _ in members]),
        )
        stacks.append((np.array([position for position, _, _ in members], dtype=np.intp), stack))
    return stacks


def calibrate_intervals(
    predictor: Predictor,
    series: Mapping[str, SpanSeries],
    horizon: int,
    level: float,
    method: str = "ewma",
    first_step: SpanStep | None = None,
) -> dict[str, IntervalCalibration | None]:
    """Per ticker, how its intervals of steps 1..``horizon`` are drawn (``IntervalCalibration``).

    From every validation origin with ``horizon`` closes after it, the
    predictor forecasts recursively; for each central coverage (``level`` and
    ``FAN_CENTRAL_LEVELS``) and step, the errors ``|log(actual / forecast)|``
    are calibrated as conformal scores: as they are (``static``,
    ``pipeline.scoring.intervals.fit_conformal``) or divided by the predicted
    scale (``network``: the network's spread of the path; ``ewma``: the EWMA
    scale; ``fit_normalised_conformal``). A ticker with too few origins for a
    level gets ``None`` (no intervals). Every ticker's paths come from one
    recursive forward pass, and the quantiles from one grouped sort.

    With ``first_step``, the one-step predictions of this same ``predictor`` on the
    span (``validation.judge_span``'s), the paths' first step is taken from them rather
    than predicted again: one forward pass of the ``horizon`` fewer.

    Raises:
        ValueError: a forecast or close is not positive and finite, or a network
            interval lacks the network's spread.
    """
    levels = sorted({float(level), *FAN_CENTRAL_LEVELS})
    points, empty = stack_points(predictor, series, horizon)
    result: dict[str, IntervalCalibration | None] = dict.fromkeys(empty)
    if points is None:
        return dict(sorted(result.items()))
    rows = None if first_step is None else points.rows_in(first_step.points)
    paths, spread = predictor.predict_paths(
        points.row_tickers(),
        points.windows(predictor.window),
        horizon,
        points.volatility(predictor),
        None if rows is None else (first_step.predicted[rows], first_step.spread[rows]),
    )
    actual = _positive_matrix("y_true", points.following(horizon))
    paths = _positive_matrix("y_pred", paths)
    long_run = (
        np.array([long_run_volatility(series[name].training_closes) for name in points.names])
        if method == "ewma"
        else None
    )
    # The scales the calibrated intervals will be drawn with (None: static), as
    # ``IntervalCalibration.scales`` draws them.
    if method == "static":
        scores = np.abs(np.log(actual / paths))
    else:
        if method == "network":
            scale = _spread_scales(method, spread, horizon)
        else:
            assert long_run is not None
            ewma = points.ewma
            sigma = np.sqrt(
                EWMA_WEIGHT * ewma**2 + (1.0 - EWMA_WEIGHT) * long_run[points.owner] ** 2
            )
            scale = step_scales(sigma, horizon)
        scores = np.abs(np.log(actual / paths)) / _positive_matrix("scale", scale)
    factors = {central: points.quantile(scores, central) for central in levels}
    for index, ticker in enumerate(points.names):
        multipliers = {central: [float(q) for q in factors[central][index]] for central in levels}
        finite = all(np.all(np.isfinite(m)) for m in multipliers.values())
        result[ticker] = (
            IntervalCalibration(
                method, multipliers, None if long_run is None else float(long_run[index])
            )
            if finite
            else None
        )
    return dict(sorted(result.items()))
