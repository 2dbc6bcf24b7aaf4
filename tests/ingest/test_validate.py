"""Column-wise validation: the Arrow paths read every field as the pandas ones did."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipeline.ingest.validate import MISSING_TOKENS, _matches, _numbers, whole_dates

#: Fields of every kind a price file holds, the odd ones included.
TEXTS = [
    "12.5",
    "-3",
    ".5",
    "5.",
    "+1.5",
    "1e6",
    "1E-3",
    "00012.50",
    "172.440000",
    "1.7976931348623157e308",
    "4.9e-324",
    "1e500",
    "1_000",
    "inf",
    "-inf",
    "Infinity",
    "NaN",
    "nan",
    "N/A",
    "",
    "-",
    "null",
    "None",
    "1,5",
    "0x10",
    "abc",
    "\u0663",  # an Arabic-Indic digit
    "1e5.5",
]


def _numbers_as_before(text: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row-by-row reading the Arrow path replaced (``pd.to_numeric`` of every field)."""
    lowered = text.str.lower()
    absent = lowered.isin(MISSING_TOKENS).to_numpy()
    cleaned = text.where(~text.str.contains("_", regex=False), "not a number")
    values = pd.to_numeric(cleaned.where(~absent), errors="coerce").astype(float).to_numpy()
    return values, absent, np.isnan(values) & ~absent


@pytest.mark.parametrize(
    "texts",
    [
        TEXTS,
        ["1.5", "2.25", "300"],  # every field plain: the cast alone
        ["", "", ""],  # a column the file does not have
        [],
    ],
)
def test_numbers_are_read_as_pd_to_numeric_read_them(texts: list[str]) -> None:
    text = pd.Series(texts, dtype="str")
    values, absent, unparseable = _numbers(text)
    expected_values, expected_absent, expected_unparseable = _numbers_as_before(text)
    np.testing.assert_array_equal(values.to_numpy(), expected_values)  # NaN equals NaN here
    assert absent.tolist() == expected_absent.tolist()
    assert unparseable.tolist() == expected_unparseable.tolist()


def test_plain_decimals_are_the_same_doubles_as_pd_to_numeric_gives() -> None:
    rng = np.random.default_rng(3)
    numbers = np.concatenate([rng.uniform(0, 1000, 5000), 10 ** rng.uniform(-300, 300, 5000)])
    texts = [f"{value:.6f}" for value in numbers[:5000]] + [f"{v:.17g}" for v in numbers[5000:]]
    values, _, _ = _numbers(pd.Series(texts, dtype="str"))
    assert values.to_numpy().tolist() == pd.to_numeric(pd.Series(texts)).tolist()


def test_dates_and_symbols_are_checked_once_per_distinct_text_with_the_same_outcome() -> None:
    dates = pd.Series(["2024-01-02", "2024-02-30", "2024-01-02T00:00:00", "2024-01", "", "x"] * 3)
    parsed = whole_dates(dates)
    assert parsed.tolist()[:6] == [
        pd.Timestamp("2024-01-02"),
        pd.NaT,
        pd.Timestamp("2024-01-02"),
        pd.NaT,
        pd.NaT,
        pd.NaT,
    ]
    assert parsed.index.equals(dates.index)
    symbols = pd.Series(["AAA", "BRK.B", "aa", "", "^GSPC", "AAA"])
    pattern = re.compile(r"^[A-Z0-9^][A-Z0-9.\-_^=]{0,15}$")
    assert _matches(symbols, pattern).tolist() == [True, True, False, False, True, True]
