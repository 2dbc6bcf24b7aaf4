"""Scalers round-trip, agree with the tutorial's MinMaxScaler, and window helpers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler

from pipeline.sequences.scaling import SCALERS, get_scaler, stack_params
from pipeline.sequences.windows import build_windows, split_counts

CLOSES = np.array([10.0, 10.5, 10.2, 11.0, 11.4, 11.1, 12.0])


@pytest.mark.parametrize("name", sorted(SCALERS))
def test_every_scaler_decodes_what_it_encodes(name: str) -> None:
    scaler = get_scaler(name)
    params = scaler.fit(CLOSES[:5])
    windows, targets = build_windows(CLOSES, 3)
    encoded = scaler.encode_target(targets, windows, params)
    np.testing.assert_allclose(scaler.decode(encoded, windows, params), targets)


def test_minmax_matches_scikit_learn() -> None:
    reference = MinMaxScaler(feature_range=(0, 1)).fit(CLOSES[:5, None])
    scaler = get_scaler("minmax")
    params = scaler.fit(CLOSES[:5])
    windows, targets = build_windows(CLOSES, 3)
    np.testing.assert_allclose(
        scaler.encode(windows, params), reference.transform(windows.reshape(-1, 1)).reshape(-1, 3)
    )
    np.testing.assert_allclose(
        scaler.encode_target(targets, windows, params),
        reference.transform(targets[:, None]).ravel(),
    )
    assert params == {"min": 10.0, "max": 11.4}


def test_log_ratio_is_level_free_and_scaled_by_training_volatility() -> None:
    scaler = get_scaler("log_ratio")
    params = scaler.fit(CLOSES[:5])
    returns = np.diff(np.log(CLOSES[:5]))
    assert params == {"scale": pytest.approx(returns.std())}
    windows, targets = build_windows(CLOSES, 3)
    encoded = scaler.encode(windows, params)
    np.testing.assert_allclose(encoded[:, -1], 0.0)
    np.testing.assert_allclose(encoded[0], np.log(windows[0] / windows[0, -1]) / returns.std())
    # The same shape at ten times the price encodes the same.
    np.testing.assert_allclose(scaler.encode(windows * 10, params), encoded)
    # A prediction of zero is the naive forecast.
    np.testing.assert_allclose(
        scaler.decode(np.zeros(len(windows)), windows, params), windows[:, -1]
    )


def test_parameters_stack_per_row() -> None:
    scaler = get_scaler("minmax")
    windows = np.array([[1.0, 2.0], [10.0, 20.0]])
    params = stack_params([{"min": 0.0, "max": 2.0}, {"min": 10.0, "max": 30.0}])
    np.testing.assert_allclose(scaler.encode(windows, params), [[0.5, 1.0], [0.0, 0.5]])
    np.testing.assert_allclose(scaler.decode(np.array([1.0, 1.0]), windows, params), [2.0, 30.0])


def test_a_constant_series_scales_to_zero_like_scikit_learn() -> None:
    scaler = get_scaler("minmax")
    params = scaler.fit(np.array([4.0, 4.0]))
    np.testing.assert_array_equal(scaler.encode(np.array([[4.0, 5.0]]), params), [[0.0, 1.0]])


def test_unknown_scaling_and_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scaling 'zscore'"):
        get_scaler("zscore")
    with pytest.raises(ValueError, match="finite"):
        get_scaler("minmax").fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="positive"):
        get_scaler("log_ratio").fit(np.array([1.0, 0.0]))


def test_windows_pair_each_input_with_the_next_value() -> None:
    x, y = build_windows(np.arange(6.0), 3)
    np.testing.assert_array_equal(x, [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(y, [3, 4, 5])
    empty_x, empty_y = build_windows(np.arange(3.0), 3)
    assert empty_x.shape == (0, 3) and empty_y.shape == (0,)


@pytest.mark.parametrize(
    ("windows", "fraction", "expected"), [(10, 0.1, (9, 1)), (10, 0.25, (7, 3)), (3, 0.1, (2, 1))]
)
def test_split_counts_hold_out_the_newest_share(
    windows: int, fraction: float, expected: tuple[int, int]
) -> None:
    assert split_counts(windows, fraction) == expected
