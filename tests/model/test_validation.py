"""Interval quality on the validation span, as the champion gate compares it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.model.scale import long_run_volatility, predicted_volatility
from pipeline.model.span import SpanSeries
from pipeline.model.validation import OneStep, span_msis

CLOSES = np.array([100.0, 101.0, 99.0, 102.0, 103.0, 101.0, 104.0, 102.0, 105.0, 106.0, 104.0])
# Validation targets at positions 6..10; the span before them (0..5) is the training span.
DATA = SpanSeries(closes=CLOSES, targets=np.arange(6, 11))
ENDS = DATA.targets
ACTUAL = CLOSES[ENDS]
PREDICTED = CLOSES[ENDS - 1] * 1.001
# The spreads a distributional network predicted at each origin.
SPREAD = np.array([0.01, 0.02, 0.015, 0.03, 0.01])
POINT = OneStep(ACTUAL, PREDICTED, CLOSES[ENDS - 1], SPREAD)


def _msis_by_hand(scale: np.ndarray, level: float) -> float:
    scores = np.sort(np.abs(np.log(ACTUAL / PREDICTED)) / scale)
    m = scores[int(np.ceil((len(scores) + 1) * level)) - 1]
    lower, upper = PREDICTED * np.exp(-m * scale), PREDICTED * np.exp(m * scale)
    alpha = 1 - level
    penalty = 2 / alpha * (np.clip(lower - ACTUAL, 0, None) + np.clip(ACTUAL - upper, 0, None))
    denominator = np.abs(np.diff(CLOSES[:6])).mean()
    return float(np.mean(((upper - lower) + penalty) / denominator))


def test_span_msis_calibrates_on_the_span_and_scales_by_the_training_moves() -> None:
    # 5 points at level 0.5: the ceil(6 * 0.5) = 3rd smallest score is the multiplier.
    static = span_msis(DATA, ENDS, POINT, 0.5, "static")
    assert static == pytest.approx(_msis_by_hand(np.ones(5), 0.5))
    scale = predicted_volatility(CLOSES, ENDS - 1, long_run_volatility(CLOSES[:6]))
    assert span_msis(DATA, ENDS, POINT, 0.5, "ewma") == pytest.approx(_msis_by_hand(scale, 0.5))
    # network: the scores are normalised by the network's own spreads.
    assert span_msis(DATA, ENDS, POINT, 0.5, "network") == pytest.approx(_msis_by_hand(SPREAD, 0.5))
    # A point network has no spread: no network interval, no score.
    pointless = OneStep(ACTUAL, PREDICTED, CLOSES[ENDS - 1], np.full(5, np.nan))
    assert span_msis(DATA, ENDS, pointless, 0.5, "network") is None
    # Too few points for the level: no interval, no score.
    assert span_msis(DATA, ENDS, POINT, 0.9, "ewma") is None
