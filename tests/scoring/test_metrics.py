"""Metrics on hand-computed examples, and refusals of inputs that cannot be scored."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate.baselines import naive
from pipeline.scoring.metrics import (
    coverage,
    interval_score,
    interval_scores,
    mae,
    mape,
    mase,
    msis,
    naive_scale,
    pinball_loss,
    quantile_name,
    relative_width,
    rmse,
    scaled_pinball_loss,
    summarise,
)

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
        "coverage_high_vol": None,
        "width": None,
        "interval_score": None,
        "msis": None,
        "n_high_vol": None,
        "spl": None,
    }
    lower = [99.0, 101.0, 104.5, 100.0]
    upper = [101.0, 103.0, 106.0, 104.0]
    assert summarise(Y, YHAT, Y_NAIVE, lower, upper, level=0.9)["coverage"] == pytest.approx(0.75)


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


# Interval [lower, upper] at level 0.8 (alpha 0.2, penalty 2 / alpha = 10 per unit of miss):
# widths 3, 2, 5, 2; point 2 is 1 below its interval, point 4 is 1 above.
LOWER = [98.0, 103.0, 101.0, 100.0]
UPPER = [101.0, 105.0, 106.0, 102.0]


def test_interval_score_adds_the_width_and_ten_times_each_miss() -> None:
    np.testing.assert_allclose(interval_scores(Y, LOWER, UPPER, 0.8), [3.0, 12.0, 5.0, 12.0])
    assert interval_score(Y, LOWER, UPPER, 0.8) == pytest.approx(32.0 / 4)


def test_msis_divides_each_point_by_its_scale() -> None:
    assert msis(Y, LOWER, UPPER, 0.8, 2.0) == pytest.approx(8.0 / 2)
    # 3 / 1 + 12 / 2 + 5 / 1 + 12 / 4 = 17 over four points.
    assert msis(Y, LOWER, UPPER, 0.8, [1.0, 2.0, 1.0, 4.0]) == pytest.approx(17.0 / 4)


def test_naive_scale_is_the_mean_absolute_daily_change() -> None:
    assert naive_scale([10.0, 12.0, 11.0, 15.0]) == pytest.approx(7.0 / 3)


def test_pinball_loss_weighs_misses_by_the_level() -> None:
    # y - q = -1, 1, 3, 2: 0.1 * 1 + 0.9 * (1 + 3 + 2) over four points.
    assert pinball_loss(Y, [101.0] * 4, 0.9) == pytest.approx((0.1 + 0.9 * 6) / 4)
    assert pinball_loss(Y, YHAT, 0.5) == pytest.approx(mae(Y, YHAT) / 2)
    assert scaled_pinball_loss(Y, [101.0] * 4, 0.9, [1.0, 1.0, 3.0, 2.0]) == pytest.approx(
        (0.1 + 0.9 + 0.9 + 0.9) / 4
    )


def test_relative_width_is_against_the_given_price() -> None:
    expected = np.mean(np.array([3.0, 2.0, 5.0, 2.0]) / np.array(Y_NAIVE))
    assert relative_width(LOWER, UPPER, Y_NAIVE) == pytest.approx(expected)


def test_quantile_names() -> None:
    assert [quantile_name(t) for t in (0.05, 0.25, 0.5, 0.95)] == ["q05", "q25", "q50", "q95"]
    assert quantile_name(0.025) == "q2_5"


def test_summarise_scores_interval_quantiles_and_the_volatile_days() -> None:
    row = summarise(
        Y,
        YHAT,
        Y_NAIVE,
        LOWER,
        UPPER,
        level=0.8,
        scale=2.0,
        quantiles={0.1: LOWER, 0.9: UPPER},
        high_vol=[False, True, False, True],
    )
    assert row["coverage"] == pytest.approx(0.5)
    assert row["coverage_high_vol"] == pytest.approx(0.0)  # both volatile days missed
    assert row["n_high_vol"] == 2
    assert row["interval_score"] == pytest.approx(8.0)
    assert row["msis"] == pytest.approx(4.0)
    # Lower quantile at 0.1: y - q = 2, -1, 3, 3 -> 0.1 * 8 + 0.9 * 1; upper at 0.9:
    # y - q = -1, -3, -2, 1 -> 0.1 * 6 + 0.9 * 1; each over 4 points, over scale 2.
    assert row["spl_q10"] == pytest.approx((0.8 + 0.9) / 4 / 2)
    assert row["spl_q90"] == pytest.approx((0.6 + 0.9) / 4 / 2)
    assert row["spl"] == pytest.approx((row["spl_q10"] + row["spl_q90"]) / 2)


def test_summarise_without_an_interval_leaves_interval_metrics_empty() -> None:
    row = summarise(Y, YHAT, Y_NAIVE)
    assert row["coverage"] is None and row["msis"] is None and row["spl"] is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: interval_score(Y, UPPER, LOWER, 0.8), "lower exceeds upper"),
        (lambda: interval_score(Y, LOWER, UPPER, 1.0), "level"),
        (lambda: msis(Y, LOWER, UPPER, 0.8, 0.0), "scale must be positive"),
        (lambda: pinball_loss(Y, YHAT, 0.0), "level"),
        (lambda: relative_width(LOWER, UPPER, [1.0, 0.0, 1.0, 1.0]), "positive prices"),
        (lambda: naive_scale([1.0]), "at least 2"),
        (lambda: summarise(Y, YHAT, Y_NAIVE, LOWER, UPPER), "level"),
    ],
)
def test_interval_metrics_refuse_what_they_cannot_score(call, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        call()
