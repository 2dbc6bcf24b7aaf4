"""Trading days from the exchange calendar."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipeline import trading_calendar
from pipeline.errors import ConfigurationError
from pipeline.trading_calendar import (
    check_exchange,
    closed_days,
    next_sessions,
    prepare_calendars,
    previous_session,
)


def test_next_sessions_skip_weekends_and_holidays() -> None:
    # 2018-03-30 was Good Friday; 2024-07-04 Independence Day.
    assert next_sessions(dt.date(2018, 3, 29), 2) == [dt.date(2018, 4, 2), dt.date(2018, 4, 3)]
    assert next_sessions(dt.date(2024, 7, 3), 1) == [dt.date(2024, 7, 5)]
    assert next_sessions(dt.date(2024, 7, 3), 1, "XLON") == [dt.date(2024, 7, 4)]


def test_previous_session_and_closed_days() -> None:
    assert previous_session(dt.date(2018, 4, 1)) == dt.date(2018, 3, 29)
    mask = closed_days([dt.date(2018, 3, 30), dt.date(2018, 4, 2), dt.date(1985, 1, 1)])
    assert mask.tolist() == [True, False, False]


def test_unknown_exchanges_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown exchange 'NOPE'"):
        check_exchange("NOPE")


def test_closed_days_take_any_date_form_and_mark_none_outside_the_calendar() -> None:
    dates = ["2018-03-30", "2018-04-02", "2018-03-31", "1985-01-01", "2099-01-03"]
    expected = [True, False, True, False, False]
    for given in (
        dates,
        [dt.date.fromisoformat(day) for day in dates],
        np.array(dates, dtype="datetime64[D]"),
        pd.Series(pd.to_datetime(dates)),
    ):
        assert closed_days(given).tolist() == expected
    assert closed_days([]).tolist() == []


def test_calendars_prepared_in_the_background_are_the_ones_used() -> None:
    """``prepare_calendars`` builds on a thread; the functions that need a calendar wait
    for that build instead of starting another, and an unknown exchange is refused where
    it is used, every time (a failed build is not kept)."""
    prepare_calendars(["XPAR", "NOPE"])
    with trading_calendar._calendars_lock:
        pending = trading_calendar._calendars["XPAR"]
    assert next_sessions(dt.date(2024, 1, 1), 1, "XPAR") == [dt.date(2024, 1, 2)]
    assert trading_calendar._calendar("XPAR") is pending.result()
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="unknown exchange 'NOPE'"):
            check_exchange("NOPE")
