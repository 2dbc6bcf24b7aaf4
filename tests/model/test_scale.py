"""The predicted scale: the EWMA recursion by hand, the long-run term, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.model.scale import (
    EWMA_LAMBDA,
    EWMA_WEIGHT,
    ewma_volatility,
    long_run_volatility,
    predicted_volatility,
    step_scales,
)

CLOSES = np.array([100.0, 102.0, 99.0, 101.0, 104.0, 103.0])


def _by_hand(closes: np.ndarray, origin: int, lookback: int) -> float:
    returns = [math.log(closes[t] / closes[t - 1]) for t in range(1, origin + 1)][-lookback:]
    variance = sum(r * r for r in returns) / len(returns)
    for r in returns:
        variance = 0.88 * variance + 0.12 * r * r
    return math.sqrt(variance)


def test_ewma_volatility_is_the_recursion_over_the_lookback() -> None:
    assert EWMA_LAMBDA == 0.88
    origins = np.array([1, 3, 5])
    np.testing.assert_allclose(
        ewma_volatility(CLOSES, origins), [_by_hand(CLOSES, o, 100) for o in origins]
    )
    # With a lookback of 2 only the origin's return and the one before count.
    np.testing.assert_allclose(
        ewma_volatility(CLOSES, origins, lookback=2), [_by_hand(CLOSES, o, 2) for o in origins]
    )


def test_the_volatility_at_an_origin_ignores_later_closes() -> None:
    changed = CLOSES.copy()
    changed[4:] *= 3.0
    assert ewma_volatility(changed, [3])[0] == ewma_volatility(CLOSES, [3])[0]


def test_the_predicted_volatility_mixes_in_the_long_run_level() -> None:
    long_run = long_run_volatility(CLOSES[:4])
    returns = np.diff(np.log(CLOSES[:4]))
    assert long_run == pytest.approx(math.sqrt(np.mean(returns**2)))
    ewma = _by_hand(CLOSES, 5, 100)
    expected = math.sqrt(EWMA_WEIGHT * ewma**2 + (1 - EWMA_WEIGHT) * long_run**2)
    assert predicted_volatility(CLOSES, [5], long_run)[0] == pytest.approx(expected)
    assert predicted_volatility(CLOSES, [5], None)[0] == pytest.approx(ewma)


def test_step_scales_grow_with_the_square_root_of_the_step() -> None:
    np.testing.assert_allclose(
        step_scales([0.01, 0.02], 3),
        [[0.01, 0.01 * 2**0.5, 0.01 * 3**0.5], [0.02, 0.02 * 2**0.5, 0.02 * 3**0.5]],
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ewma_volatility(CLOSES, [0]), "origins must lie in"),
        (lambda: ewma_volatility(CLOSES, [6]), "origins must lie in"),
        (lambda: ewma_volatility([1.0, -1.0], [1]), "positive"),
        (lambda: ewma_volatility(CLOSES, [1], lookback=0), "lookback"),
        (lambda: long_run_volatility([1.0]), "at least 2"),
    ],
)
def test_refusals(call, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        call()
