"""Metrics on hand-computed examples, and refusals of inputs that cannot be scored."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate.baselines import naive
from pipeline.evaluate.metrics import coverage, mae, mape, mase, rmse, summarise

# Four points: model errors are 1, -1, 1, -3 and the naive forecast misses each by 2.
Y = [100.0, 102.0, 104.0, 103.0]
YHAT = [99.0, 103.0, 103.0, 106.0]
Y_NAIVE = [98.0, 104.0, 102.0, 105.0]


def test_point_metrics_on_four_points() -> None:
    assert mae(Y, YHAT) == pytest.approx(6.0 / 4)
    assert rmse(Y, YHAT) == pytest.approx(math.sqrt((1 + 1 + 1 + 9) / 4))
    expected_mape = 100.0 * (1 / 100 + 1 / 102 + 1 / 104 + 3 / 103) / 4
    assert mape(Y, YHAT) == pytest.approx(expected_mape)
    assert mape(Y, YHAT) == pytest.approx(1.46364, abs=1e-5)
    # Model MAE 1.5 over naive MAE 2.0.
    assert mase(Y, YHAT, Y_NAIVE) == pytest.approx(0.75)


def test_metrics_accept_an_n_by_horizon_block() -> None:
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    yhat = np.array([[2.0, 2.0], [3.0, 0.0]])
    assert mae(y, yhat) == pytest.approx(5.0 / 4)
    assert rmse(y, yhat) == pytest.approx(math.sqrt(17.0 / 4))


def test_the_naive_forecast_scores_exactly_one() -> None:
    history = np.array([10.0, 11.0, 10.5, 12.0, 12.5, 11.0, 13.0, 14.0])
    origins = np.arange(2, 6)
    forecasts = naive(history, origins, horizon=2)
    for step in range(2):
        y = history[origins + step + 1]
        assert mase(y, forecasts[:, step], forecasts[:, step]) == 1.0


def test_mase_is_nan_when_the_naive_forecast_is_exact() -> None:
    assert math.isnan(mase([1.0, 2.0], [1.5, 2.0], [1.0, 2.0]))


def test_coverage_counts_bounds_as_inside() -> None:
    y = [1.0, 2.0, 3.0, 4.0, 5.0]
    lower = [1.0, 2.5, 2.0, 3.0, 0.0]
    upper = [2.0, 3.0, 3.0, 3.5, 5.0]
    # Inside: 1 (on the lower bound), 3 (on the upper bound), 5 (on the upper bound).
    assert coverage(y, lower, upper) == pytest.approx(3 / 5)


def test_summarise_reports_every_metric() -> None:
    report = summarise(Y, YHAT, Y_NAIVE)
    assert report == {
        "n": 4,
        "mae": pytest.approx(1.5),
        "rmse": pytest.approx(math.sqrt(3.0)),
        "mape": pytest.approx(mape(Y, YHAT)),
        "mase": pytest.approx(0.75),
        "coverage": None,
    }
    lower = [99.0, 101.0, 104.5, 100.0]
    upper = [101.0, 103.0, 106.0, 104.0]
    assert summarise(Y, YHAT, Y_NAIVE, lower, upper)["coverage"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("y", "yhat", "message"),
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], "same shape"),
        ([1.0, float("nan")], [1.0, 2.0], "y has 1 NaN"),
        ([1.0, 2.0], [1.0, float("inf")], "yhat has 1 NaN or infinite value"),
        ([], [], "empty"),
    ],
)
def test_unscorable_inputs_are_refused(y: list[float], yhat: list[float], message: str) -> None:
    for metric in (mae, rmse, mape):
        with pytest.raises(ValueError, match=message):
            metric(y, yhat)
    with pytest.raises(ValueError, match=message):
        mase(y, yhat, y)


def test_mape_refuses_a_zero_observation() -> None:
    with pytest.raises(ValueError, match="undefined where y is zero"):
        mape([0.0, 1.0], [1.0, 1.0])


def test_coverage_refuses_crossed_bounds() -> None:
    with pytest.raises(ValueError, match="lower exceeds upper"):
        coverage([1.0, 2.0], [0.0, 3.0], [2.0, 2.5])


def test_summarise_needs_both_bounds_or_neither() -> None:
    with pytest.raises(ValueError, match="both lower and upper"):
        summarise(Y, YHAT, Y_NAIVE, lower=Y)
