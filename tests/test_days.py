"""``as_days``: every form a date arrives in gives the same ``datetime64[D]`` array."""

from __future__ import annotations

import datetime as dt

import numpy as np

from pipeline.days import as_days

DATES = [dt.date(1969, 12, 31), dt.date(1970, 1, 1), dt.date(2024, 2, 29)]
EXPECTED = np.array(["1969-12-31", "1970-01-01", "2024-02-29"], dtype="datetime64[D]")


def test_dates_text_and_datetime64_agree() -> None:
    for values in (
        DATES,
        np.array(DATES, dtype=object),
        [day.isoformat() for day in DATES],
        EXPECTED.astype("datetime64[ns]"),
    ):
        days = as_days(values)
        assert days.dtype == np.dtype("datetime64[D]")
        np.testing.assert_array_equal(days, EXPECTED)


def test_nothing_gives_an_empty_array() -> None:
    assert as_days([]).dtype == np.dtype("datetime64[D]")
    assert len(as_days([])) == 0
