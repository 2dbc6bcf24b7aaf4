"""Column names shared by data frames, tables and files.

Every stage refers to these constants rather than repeating string literals.
"""

import re

TICKER = "ticker"
#: A ticker symbol: capital letters and digits, optionally with ``.``, ``-``, ``_``, ``^``
#: or ``=``, at most 16 characters, not starting with punctuation other than ``^``. Every
#: symbol that enters the database (files, feeds, ``pricecast tickers add``) matches it.
TICKER_PATTERN = re.compile(r"^[A-Z0-9^][A-Z0-9.\-_^=]{0,15}$")
TRADE_DATE = "trade_date"
OPEN = "open"
HIGH = "high"
LOW = "low"
CLOSE = "close"
ADJ_CLOSE = "adj_close"
VOLUME = "volume"
SOURCE = "source"

#: Optional price fields a source may carry besides the close.
OPTIONAL_PRICE_FIELDS = (OPEN, HIGH, LOW, ADJ_CLOSE, VOLUME)
#: Every column of the normalised long price frame, in table order.
PRICE_COLUMNS = (TICKER, TRADE_DATE, OPEN, HIGH, LOW, CLOSE, ADJ_CLOSE, VOLUME, SOURCE)

# Sequence files.
TARGET_DATE = "target_date"
SPLIT = "split"
TARGET = "y"
#: The raw close a window is followed by (its target before scaling).
TARGET_CLOSE = "target_close"
SPLIT_TRAIN = "train"
SPLIT_VALIDATION = "validation"


def window_columns(window: int) -> list[str]:
    """Names of the scaled input columns of a sequence file, oldest first."""
    return [f"x{i}" for i in range(window)]


def raw_window_columns(window: int) -> list[str]:
    """Names of the raw (unscaled) input columns of a sequence file, oldest first."""
    return [f"p{i}" for i in range(window)]


# Forecasts.
AS_OF_DATE = "as_of_date"
MODEL_VERSION = "model_version"
HORIZON = "horizon"
YHAT = "yhat"
