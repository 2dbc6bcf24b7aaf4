"""The validation span judged for every ticker at once equals each ticker judged alone
(to float32 rounding: the forward pass runs in float32 over other batches).

``fit_damping``, ``evaluate_span`` and ``calibrate_intervals`` stack every ticker's
points into one forward pass and grouped reductions; the references here go
ticker by ticker, window by window, with the per-ticker functions
(``span_msis``, ``fit_conformal``, ``fit_normalised_conformal``, one
``ewma_volatility`` call per ticker) and a forward pass per ticker.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.model.calibration import calibrate_intervals
from pipeline.model.numpy_lstm import NumpyLSTM
from pipeline.model.predictor import VOLATILITY_PARAM, Predictor
from pipeline.model.scale import (
    ewma_volatility,
    long_run_volatility,
    predicted_volatility,
    step_scales,
)
from pipeline.model.span import SpanSeries, stack_points, with_origin_volatility
from pipeline.model.store import GLOBAL
from pipeline.model.validation import (
    DAMPING_GRID,
    OneStep,
    evaluate_span,
    fit_damping,
    judge_span,
    span_msis,
)
from pipeline.scoring.intervals import fit_conformal, fit_normalised_conformal
from pipeline.sequences.scaling import get_scaler

WINDOW = 4
HORIZON = 3


def _network(features: int, outputs: int, seed: int, units: int = 8) -> NumpyLSTM:
    rng = np.random.default_rng(seed)
    return NumpyLSTM(
        kernel=rng.normal(0, 0.5, (features, 4 * units)).astype(np.float32),
        recurrent_kernel=rng.normal(0, 0.5, (units, 4 * units)).astype(np.float32),
        bias=rng.normal(0, 0.1, 4 * units).astype(np.float32),
        dense_kernel=rng.normal(0, 0.3, (units, outputs)).astype(np.float32),
        dense_bias=np.zeros(outputs, np.float32),
    )


def _series(seed: int = 7) -> dict[str, SpanSeries]:
    """Tickers of different lengths and volatilities; ``SHORT`` has two validation
    targets (too few for the calibration's levels), ``TINY`` none with a full window."""
    rng = np.random.default_rng(seed)
    lengths = {"AAA": 60, "BBB": 41, "CCC": 75, "DDD": 33, "SHORT": 14, "TINY": 6}
    result = {}
    for index, (name, length) in enumerate(lengths.items()):
        returns = rng.normal(0.0005, 0.01 + 0.005 * index, length)
        closes = 20.0 * (index + 1) * np.exp(np.cumsum(returns))
        validation = max(2, length // 3)
        targets = np.arange(length - validation, length)
        if name == "TINY":
            targets = np.arange(2, WINDOW)  # fewer than WINDOW closes before each
        result[name] = SpanSeries(closes=closes, targets=targets)
    return result


def _predictor(distributional: bool, scope: str, scaling: str) -> Predictor:
    series = _series()
    scaler = get_scaler(scaling)
    params = {}
    for name, data in series.items():
        if name == "DDD":
            continue  # a ticker the model does not cover is left out
        fitted = scaler.fit(data.training_closes)
        if distributional:
            fitted[VOLATILITY_PARAM] = long_run_volatility(data.training_closes)
        params[name] = fitted
    features, outputs = (2, 2) if distributional else (1, 1)
    if scope == "global":
        networks = {GLOBAL: _network(features, outputs, 1)}
    else:
        networks = {name: _network(features, outputs, i + 2) for i, name in enumerate(params)}
    return Predictor(WINDOW, scaler, params, networks)


def _alone(predictor: Predictor, ticker: str) -> Predictor:
    """The predictor of one ticker only."""
    networks = predictor.networks
    if GLOBAL not in networks:
        networks = {ticker: networks[ticker]}
    return Predictor(
        predictor.window,
        predictor.scaler,
        {ticker: predictor.params[ticker]},
        networks,
        {ticker: predictor.damping[ticker]} if ticker in predictor.damping else {},
    )


def _one_step_alone(predictor: Predictor, ticker: str, data: SpanSeries) -> OneStep | None:
    ends = data.targets[data.targets >= predictor.window]
    if not len(ends):
        return None
    windows = np.stack([data.closes[end - predictor.window : end] for end in ends])
    volatility = (
        np.array([ewma_volatility(data.closes, [end - 1])[0] for end in ends])
        if predictor.distributional
        else None
    )
    single = _alone(predictor, ticker)
    predicted, spread = single.predict_distribution([ticker] * len(ends), windows, volatility)
    return OneStep(data.closes[ends], predicted, data.closes[ends - 1], spread)


CASES = [
    pytest.param(True, "global", "log_ratio", "network", id="distributional-global-network"),
    pytest.param(True, "per_ticker", "log_ratio", "ewma", id="distributional-per-ticker-ewma"),
    pytest.param(False, "global", "minmax", "static", id="point-global-minmax-static"),
    pytest.param(False, "per_ticker", "log_ratio", "ewma", id="point-per-ticker-ewma"),
]


@pytest.mark.parametrize(("distributional", "scope", "scaling", "method"), CASES)
def test_damping_and_span_errors_equal_each_ticker_alone(
    distributional: bool, scope: str, scaling: str, method: str
) -> None:
    series = _series()
    predictor = _predictor(distributional, scope, scaling)
    damping = fit_damping(predictor, series)
    predictor.damping = damping
    errors = evaluate_span(predictor, series, 0.5, method)

    expected_tickers = ["AAA", "BBB", "CCC", "SHORT"]  # DDD uncovered, TINY has no full window
    assert sorted(damping) == expected_tickers
    assert sorted(errors.per_ticker) == expected_tickers
    for ticker in expected_tickers:
        data = series[ticker]
        undamped = _one_step_alone(
            Predictor(WINDOW, predictor.scaler, predictor.params, predictor.networks), ticker, data
        )
        assert undamped is not None
        candidates = undamped.naive[None, :] + DAMPING_GRID[:, None] * (
            undamped.predicted - undamped.naive
        )
        mae = np.abs(candidates - undamped.actual[None, :]).mean(axis=1)
        best = np.flatnonzero(mae <= mae.min() + 1e-12)[-1]
        assert damping[ticker] == DAMPING_GRID[best]

        point = _one_step_alone(predictor, ticker, data)
        assert point is not None
        row = errors.per_ticker[ticker]
        assert row["n"] == len(point.actual)
        assert row["mae"] == pytest.approx(np.mean(np.abs(point.actual - point.predicted)))
        assert row["naive_mae"] == pytest.approx(np.mean(np.abs(point.actual - point.naive)))
        ends = data.targets[data.targets >= WINDOW]
        alone = span_msis(data, ends, point, 0.5, method)
        if alone is None:
            assert row["msis"] is None
        else:
            assert row["msis"] == pytest.approx(alone, rel=1e-6)
    # SHORT has 2 points: too few for a 0.9 interval, so no MSIS.
    assert evaluate_span(predictor, series, 0.9, method).per_ticker["SHORT"]["msis"] is None


@pytest.mark.parametrize(("distributional", "scope", "scaling", "method"), CASES)
def test_interval_calibration_equals_each_ticker_alone(
    distributional: bool, scope: str, scaling: str, method: str
) -> None:
    series = _series()
    predictor = _predictor(distributional, scope, scaling)
    predictor.damping = fit_damping(predictor, series)
    calibrations = calibrate_intervals(predictor, series, HORIZON, 0.8, method)

    # Every covered ticker has an entry; TINY has no origin with a full window.
    assert list(calibrations) == ["AAA", "BBB", "CCC", "SHORT", "TINY"]
    assert calibrations["TINY"] is None
    for ticker in ("AAA", "BBB", "CCC", "SHORT"):
        data = series[ticker]
        ends = data.targets[(data.targets >= WINDOW) & (data.targets + HORIZON <= len(data.closes))]
        windows = np.stack([data.closes[end - WINDOW : end] for end in ends])
        volatility = (
            np.array([ewma_volatility(data.closes, [end - 1])[0] for end in ends])
            if distributional
            else None
        )
        paths, spread = _alone(predictor, ticker).predict_paths(
            [ticker] * len(ends), windows, HORIZON, volatility
        )
        actual = np.stack([data.closes[end : end + HORIZON] for end in ends])
        long_run = long_run_volatility(data.training_closes) if method == "ewma" else None
        if method == "network":
            scale = spread
        elif method == "ewma":
            scale = step_scales(predicted_volatility(data.closes, ends - 1, long_run), HORIZON)
        else:
            scale = None
        expected = {
            central: fit_conformal(actual, paths, central)
            if scale is None
            else fit_normalised_conformal(actual, paths, scale, central)
            for central in (0.5, 0.8, 0.9)
        }
        calibration = calibrations[ticker]
        if not all(np.all(np.isfinite(q)) for q in expected.values()):
            assert ticker == "SHORT"  # two origins: too few for 0.8 and 0.9
            assert calibration is None
            continue
        assert calibration is not None
        assert calibration.method == method
        assert calibration.long_run == (None if long_run is None else pytest.approx(long_run))
        assert sorted(calibration.multipliers) == sorted(expected)
        for central, multipliers in calibration.multipliers.items():
            np.testing.assert_allclose(multipliers, expected[central], rtol=1e-6)


def test_the_volatility_of_several_tickers_at_once_is_each_tickers_own() -> None:
    series = _series()
    closes = np.concatenate([data.closes for data in series.values()])
    offsets = np.cumsum([0, *(len(data.closes) for data in series.values())])[:-1]
    origins, first, expected = [], [], []
    for offset, data in zip(offsets, series.values(), strict=True):
        own = np.arange(1, len(data.closes))
        origins.append(own + offset)
        first.append(np.full(len(own), offset))
        expected.append(ewma_volatility(data.closes, own, lookback=20))
    together = ewma_volatility(
        closes, np.concatenate(origins), lookback=20, first=np.concatenate(first)
    )
    np.testing.assert_array_equal(together, np.concatenate(expected))
    with pytest.raises(ValueError, match="origins must lie"):
        ewma_volatility(closes, [offsets[1]], first=[offsets[1]])  # no return of its own


@pytest.mark.parametrize(("distributional", "scope", "scaling", "method"), CASES)
def test_damping_and_errors_from_one_pass_equal_the_two_calls(
    distributional: bool, scope: str, scaling: str, method: str
) -> None:
    """What ``fit_network`` judges a damped model with (``judge_span`` with ``damp``: one
    forward pass) is exactly ``fit_damping`` then ``evaluate_span`` of the damped
    predictor (two passes), and the predictions it hands on are the damped predictor's."""
    series = _series()
    predictor = _predictor(distributional, scope, scaling)
    damping = fit_damping(predictor, series)
    predictor.damping = damping
    expected = evaluate_span(predictor, series, 0.8, method)
    points, _ = stack_points(predictor, series)
    assert points is not None
    expected_step = predictor.predict_distribution(
        points.row_tickers(), points.windows(WINDOW), points.volatility(predictor)
    )
    predictor.damping = {"AAA": 0.5}  # ignored: the damping is fitted afresh
    judged = judge_span(predictor, series, 0.8, method, damp=True)
    assert judged.damping == damping
    assert judged.errors.per_ticker == expected.per_ticker
    assert sorted(judged.errors.per_ticker) == ["AAA", "BBB", "CCC", "SHORT"]
    assert judged.step is not None
    np.testing.assert_array_equal(judged.step.predicted, expected_step[0])
    np.testing.assert_array_equal(judged.step.spread, expected_step[1])
    # Without damp, the predictor's own damping is the one judged.
    predictor.damping = damping
    undamped = judge_span(predictor, series, 0.8, method)
    assert undamped.damping == damping
    assert undamped.errors.per_ticker == expected.per_ticker


@pytest.mark.parametrize(("distributional", "scope", "scaling", "method"), CASES)
def test_calibration_reuses_the_judged_first_step(
    distributional: bool, scope: str, scaling: str, method: str
) -> None:
    """Given the judged one-step predictions, the calibration's paths take their first
    step from them (one forward pass fewer) and calibrate the same intervals."""
    series = _series()
    predictor = _predictor(distributional, scope, scaling)
    judged = judge_span(predictor, series, 0.8, method, damp=True)
    predictor.damping = judged.damping
    expected = calibrate_intervals(predictor, series, HORIZON, 0.8, method)
    calls = []
    original = predictor.predict_distribution

    def counted(tickers, windows, volatility=None):
        calls.append(len(windows))
        return original(tickers, windows, volatility)

    predictor.predict_distribution = counted  # type: ignore[method-assign]
    found = calibrate_intervals(predictor, series, HORIZON, 0.8, method, judged.step)
    assert len(calls) == HORIZON - 1
    assert list(found) == list(expected)
    for ticker, calibration in expected.items():
        if calibration is None:
            assert found[ticker] is None
            continue
        assert found[ticker] is not None
        for central, multipliers in calibration.multipliers.items():
            np.testing.assert_allclose(found[ticker].multipliers[central], multipliers, rtol=1e-6)
    # Predictions of other points (another span) are not taken for these.
    other = {name: data for name, data in series.items() if name != "AAA"}
    foreign = judge_span(predictor, other, 0.8, method).step
    calls.clear()
    calibrate_intervals(predictor, series, HORIZON, 0.8, method, foreign)
    assert len(calls) == HORIZON


def test_rows_in_finds_each_point_among_anothers() -> None:
    series = _series()
    predictor = _predictor(False, "global", "minmax")
    one_step, _ = stack_points(predictor, series)
    paths, _ = stack_points(predictor, series, HORIZON)
    assert one_step is not None and paths is not None
    rows = paths.rows_in(one_step)
    assert rows is not None
    np.testing.assert_array_equal(one_step.windows(WINDOW)[rows], paths.windows(WINDOW))
    assert np.array_equal(
        np.array(one_step.row_tickers(), dtype=object)[rows],
        np.array(paths.row_tickers(), dtype=object),
    )
    assert one_step.rows_in(paths) is None  # the newest targets have no path


def test_origin_volatility_computed_ahead_is_the_one_judging_computes() -> None:
    series = _series()
    ahead = with_origin_volatility(series)
    for name, data in series.items():
        assert ahead[name].volatility is not None
        origins = data.targets[data.targets >= 1] - 1
        expected = ewma_volatility(data.closes, np.maximum(origins, 1))
        np.testing.assert_array_equal(ahead[name].volatility[data.targets >= 1], expected)
    predictor = _predictor(True, "global", "log_ratio")
    for method in ("network", "ewma"):
        judged = judge_span(predictor, ahead, 0.8, method, damp=True)
        assert judged.errors.per_ticker == (
            judge_span(predictor, series, 0.8, method, damp=True).errors.per_ticker
        )
        predictor.damping = judged.damping
        assert calibrate_intervals(predictor, ahead, HORIZON, 0.8, method) == (
            calibrate_intervals(predictor, series, HORIZON, 0.8, method)
        )


def test_the_cases_have_damped_tickers_and_undamped_ones() -> None:
    """So that the comparison above covers damping applied and damping skipped."""
    damped = [
        set(fit_damping(_predictor(*case.values[:3]), _series()).values()) != {1.0}
        for case in CASES
    ]
    assert any(damped) and not all(damped)
