"""Business days after an as-of date.

Monday to Friday, as pandas' ``BDay``; exchange holidays are not skipped yet.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
from pandas.tseries.offsets import BDay


def next_business_days(after: dt.date, count: int) -> list[dt.date]:
    """The ``count`` business days strictly after ``after``, in order."""
    if count < 1:
        return []
    start = pd.Timestamp(after) + BDay(1)
    return [stamp.date() for stamp in pd.bdate_range(start, periods=count)]


def previous_business_day(on_or_before: dt.date) -> dt.date:
    """``on_or_before`` when it is a business day, else the business day before it."""
    stamp = pd.Timestamp(on_or_before)
    return stamp.date() if stamp.dayofweek < 5 else (stamp - BDay(1)).date()
