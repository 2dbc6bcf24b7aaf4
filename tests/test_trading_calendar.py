"""Trading days from the exchange calendar."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.errors import ConfigurationError
from pipeline.trading_calendar import check_exchange, closed_days, next_sessions, previous_session


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
