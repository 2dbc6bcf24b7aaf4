"""Decimals of an input's prices, and single-precision floats read as their shortest text."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.precision import MAX_DECIMALS, decimals, float32_text


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([172.44, 3.9375, 100.0], 4),
        ([172.440002, 0.117203], 6),
        ([101.0, 99.0], 0),
        ([185.64, 184.1, np.nan], 2),
        ([0.00000123], 8),
        ([172.44000244140625], MAX_DECIMALS),  # binary noise: as many as kept
        ([], MAX_DECIMALS),
    ],
)
def test_decimals_is_the_fewest_that_write_every_value(values: list, expected: int) -> None:
    assert decimals(np.array(values, dtype=float)) == expected


def test_a_float32_is_written_as_its_shortest_text_and_a_double_is_not() -> None:
    assert float32_text(float(np.float32(172.44))) == "172.44"
    assert float32_text(float(np.float32(0.117203))) == "0.117203"
    assert float32_text(float(np.float32(1e-7))) == "0.0000001"
    assert float32_text(100.0) == "100"
    # Not a single-precision number: the double's own text is already exact.
    assert float32_text(172.44) is None
    assert float32_text(182.70000000000002) is None
    assert float32_text(float("nan")) is None
