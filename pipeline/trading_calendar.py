"""Trading days from an exchange calendar (``exchange_calendars``; default New York, XNYS).

Forecasts target the exchange's next sessions, so they skip weekends and
holidays; validation flags prices dated on days the exchange was closed.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from pipeline.errors import ConfigurationError

if TYPE_CHECKING:  # pandas is imported where used: settings read DEFAULT_EXCHANGE at start-up
    import numpy as np
    import pandas as pd

DEFAULT_EXCHANGE = "XNYS"
#: First date the calendars cover; older prices are not checked against them.
CALENDAR_START = "1990-01-01"


#: Each exchange's calendar, built once per process (about 0.3-0.5 s: exchange_calendars
#: computes every holiday rule from ``CALENDAR_START`` on) and shared by every thread.
_calendars: dict[str, Future] = {}
_calendars_lock = threading.Lock()


def _build(exchange: str):  # noqa: ANN202 - exchange_calendars.ExchangeCalendar
    import exchange_calendars

    try:
        return exchange_calendars.get_calendar(exchange, start=CALENDAR_START)
    except exchange_calendars.errors.InvalidCalendarName:
        raise ConfigurationError(
            f"unknown exchange {exchange!r}; use an exchange_calendars code such as XNYS, "
            "XNAS, XLON or XTKS"
        ) from None


def _fill(future: Future, exchange: str) -> None:
    try:
        future.set_result(_build(exchange))
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
        future.set_exception(exc)


def _future(exchange: str, *, background: bool) -> Future:
    """The calendar of ``exchange``, built or being built; starts building it (on a
    daemon thread when ``background``) if nobody has."""
    with _calendars_lock:
        future = _calendars.get(exchange)
        started = future is None
        if future is None:
            future = _calendars[exchange] = Future()
    if started:
        if background:
            name = f"pricecast-calendar-{exchange}"
            threading.Thread(target=_fill, args=(future, exchange), name=name, daemon=True).start()
        else:
            _fill(future, exchange)
    return future


def _calendar(exchange: str):  # noqa: ANN202 - exchange_calendars.ExchangeCalendar
    future = _future(exchange, background=False)
    try:
        return future.result()
    except BaseException:
        with _calendars_lock:  # not kept: the next call tries again, as before
            if _calendars.get(exchange) is future:
                del _calendars[exchange]
        raise


def prepare_calendars(exchanges: Iterable[str]) -> None:
    """Start building the calendars of ``exchanges`` on background threads, so that
    the work that needs them first (validating an input, after reading it) waits less
    or not at all. Errors (an unknown exchange) are raised where a calendar is used.
    """
    for exchange in sorted(set(exchanges)):
        _future(exchange, background=True)


def check_exchange(exchange: str) -> str:
    """``exchange`` when it names a known calendar.

    Raises:
        ConfigurationError: no calendar has that code.
    """
    _calendar(exchange)
    return exchange


def next_sessions(after: dt.date, count: int, exchange: str = DEFAULT_EXCHANGE) -> list[dt.date]:
    """The ``count`` trading days strictly after ``after``, in order.

    Raises:
        ConfigurationError: the calendar does not reach that far.
    """
    if count < 1:
        return []
    calendar = _calendar(exchange)
    import pandas as pd

    start = pd.Timestamp(after) + pd.Timedelta(days=1)
    if start > calendar.last_session:
        raise ConfigurationError(
            f"the {exchange} calendar ends on {calendar.last_session.date()}; "
            f"it cannot give trading days after {after}"
        )
    start = max(start, calendar.first_session)
    sessions = calendar.sessions_in_range(start, calendar.last_session)[:count]
    if len(sessions) < count:
        raise ConfigurationError(
            f"the {exchange} calendar has only {len(sessions)} trading days after {after}"
        )
    return [stamp.date() for stamp in sessions]


def trading_days(
    start_date: dt.date, end_date: dt.date, exchange: str = DEFAULT_EXCHANGE
) -> list[dt.date]:
    """The exchange's trading days from ``start_date`` to ``end_date``, both included, in order.

    Args:
        start_date: the first day of the range.
        end_date: the last day of the range (clamped to the calendar's last session).
        exchange: an ``exchange_calendars`` code, e.g. ``XNYS``.

    Returns:
        The sessions in the range; empty when the range holds none (a weekend).

    Raises:
        ConfigurationError: ``start_date`` is after ``end_date``, or the exchange is unknown.
    """
    if start_date > end_date:
        raise ConfigurationError(f"start_date {start_date} is after end_date {end_date}")
    calendar = _calendar(exchange)
    import pandas as pd

    first = max(pd.Timestamp(start_date), calendar.first_session)
    last = min(pd.Timestamp(end_date), calendar.last_session)
    if first > last:
        return []
    return [stamp.date() for stamp in calendar.sessions_in_range(first, last)]


def exchange_timezone(exchange: str = DEFAULT_EXCHANGE) -> str:
    """The exchange's time zone (e.g. ``America/New_York``)."""
    return str(_calendar(exchange).tz)


def previous_session(on_or_before: dt.date, exchange: str = DEFAULT_EXCHANGE) -> dt.date:
    """The last trading day on or before ``on_or_before``."""
    calendar = _calendar(exchange)
    import pandas as pd

    stamp = pd.Timestamp(on_or_before)
    if stamp > calendar.last_session:
        stamp = calendar.last_session
    return calendar.date_to_session(stamp, direction="previous").date()


@functools.cache
def _session_days(exchange: str) -> np.ndarray:
    """The exchange's sessions as sorted ``datetime64[D]``."""
    import numpy as np

    calendar = _calendar(exchange)
    return np.asarray(calendar.sessions.to_numpy(), dtype="datetime64[D]")


def closed_days(
    dates: Sequence[dt.date] | pd.Series | np.ndarray, exchange: str = DEFAULT_EXCHANGE
) -> np.ndarray:
    """A mask of the dates on which the exchange did not trade.

    Dates outside the calendar's range are never marked closed.
    """
    import numpy as np
    import pandas as pd

    sessions = _session_days(exchange)
    days = pd.to_datetime(pd.Series(dates)).to_numpy().astype("datetime64[D]")
    if not len(sessions):
        return np.zeros(len(days), dtype=bool)
    inside = (days >= sessions[0]) & (days <= sessions[-1])
    at = np.clip(np.searchsorted(sessions, days), 0, len(sessions) - 1)
    return inside & (sessions[at] != days)
