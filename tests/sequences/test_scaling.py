"""Scalers round-trip and agree with the seed's scikit-learn MinMaxScaler."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler

from pipeline.sequences.scaling import SCALERS, get_scaler, rescale
from pipeline.sequences.windows import build_windows, split_counts


@pytest.mark.parametrize("name", sorted(SCALERS))
def test_every_scaler_round_trips(name: str) -> None:
    scaler = get_scaler(name)
    values = np.array([3.0, 7.5, 2.25, 10.0, 4.0])
    params = scaler.fit(values[:3])
    np.testing.assert_allclose(scaler.invert(scaler.apply(values, params), params), values)


def test_minmax_matches_scikit_learn() -> None:
    values = np.array([5.0, 1.0, 9.0, 3.0])
    reference = MinMaxScaler(feature_range=(0, 1)).fit(values[:, None])
    scaler = get_scaler("minmax")
    params = scaler.fit(values)
    np.testing.assert_allclose(
        scaler.apply(values, params), reference.transform(values[:, None]).ravel()
    )
    assert params == {"min": 1.0, "max": 9.0}


def test_a_constant_series_scales_to_zero_like_scikit_learn() -> None:
    scaler = get_scaler("minmax")
    params = scaler.fit(np.array([4.0, 4.0]))
    np.testing.assert_array_equal(scaler.apply(np.array([4.0, 5.0]), params), [0.0, 1.0])


def test_rescale_moves_values_between_fitted_parameters() -> None:
    scaler = get_scaler("minmax")
    values = np.array([2.0, 6.0])
    first, second = {"min": 0.0, "max": 10.0}, {"min": 2.0, "max": 4.0}
    np.testing.assert_allclose(
        rescale(scaler.apply(values, first), scaler, first, second), scaler.apply(values, second)
    )


def test_unknown_scaling_and_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scaling 'zscore'"):
        get_scaler("zscore")
    with pytest.raises(ValueError, match="finite"):
        get_scaler("minmax").fit(np.array([1.0, np.nan]))


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
