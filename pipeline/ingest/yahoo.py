"""Daily prices from Yahoo Finance through the optional ``yfinance`` package.

Install it with the ``yahoo`` extra (``pip install 'pricecast[yahoo]'``); it
is imported only when the source fetches, so the rest of the pipeline never
needs it.

Rules, for each ticker of the run (sorted, each once):

* **Window.** From the day after the ticker's newest stored date (or the
  source's ``start`` for a new ticker) through the run's as-of date, both
  inclusive; yfinance is asked for ``end = as-of + 1 day`` because its end
  is exclusive. Without an as-of date, everything Yahoo has from ``start``.
  A window after the as-of date, or one without a weekday (a weekend), is not
  asked for: the next weekday's run covers those days, as its window starts
  after the newest stored date.
* **Content.** ``Ticker.history`` with ``auto_adjust=False`` (the close and
  the adjusted close are both kept) and no corporate actions; the frame is
  written as single-ticker CSV text (``Date,Open,High,Low,Close,Adj
  Close,Volume``, see ``history_to_csv``) and parsed like any feed answer,
  so its rows are validated and quarantined the same way. The input's origin
  is ``yahoo://TICKER?start=YYYY-MM-DD&end=YYYY-MM-DD`` (``end`` is the as-of
  date, inclusive), which is also the ``source`` stored with its rows; its
  version is the SHA-256 of the CSV text.
* **Failures.** An exception from yfinance, or an empty answer for a window
  with weekdays (unknown or delisted ticker, a holiday, or Yahoo Finance
  unreachable: yfinance reports all of these as an empty frame), makes the
  ticker's input carry a one-line ``error`` (``Yahoo Finance unreachable:
  ...``); the run goes on with the next ticker.
* **Size.** yfinance downloads each answer with its own HTTP session, so its bytes
  cannot be cut off on the way in; what it yields is bounded instead: a history
  whose CSV text would pass the run's ``max_input_bytes``
  (``PRICECAST_MAX_INPUT_BYTES``) is rejected whole, naming its origin, before the
  text is built when its rows alone (at least ``MIN_ROW_BYTES`` each) pass the
  limit. The window (from the newest stored date) keeps an honest answer small: 25
  years of one ticker are about 6,300 rows, 0.4 MB.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import io
import logging
import math
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pandas as pd

from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes
from pipeline.ingest.fetch import FEED, FetchContext, FetchedInput, over_limit, too_large_input
from pipeline.ingest.readers import parse_csv_text
from pipeline.precision import float32_text

logger = logging.getLogger(__name__)

#: Where the history of a ticker with no stored prices starts, by default.
DEFAULT_START = dt.date(2000, 1, 1)
#: yfinance's column names, in the order of the CSV text written for the readers.
HISTORY_COLUMNS = ("Open", "High", "Low", "Close", "Adj Close", "Volume")
INSTALL_HINT = "pip install 'pricecast[yahoo]'"
#: Longest error text kept from an exception.
_MESSAGE_LIMIT = 300
#: The fewest bytes a row of the CSV text takes: its date and a line break.
MIN_ROW_BYTES = len("2024-01-02\n")


def import_yfinance() -> ModuleType:
    """The ``yfinance`` module.

    Raises:
        ConfigurationError: it is not installed, or cannot be imported.
    """
    try:
        return importlib.import_module("yfinance")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "yfinance":
            raise ConfigurationError(
                f"the yahoo source needs the yfinance package: {INSTALL_HINT}"
            ) from exc
        raise ConfigurationError(
            f"the yahoo source cannot import the yfinance package ({_one_line(exc)}); "
            f"reinstall it: {INSTALL_HINT}"
        ) from exc


class YahooSource:
    """Daily prices from Yahoo Finance, one request per ticker (see the module docstring).

    Args:
        start: the first date asked for a ticker with no stored prices.
        timeout: seconds yfinance may wait for Yahoo Finance.
    """

    def __init__(self, *, start: dt.date = DEFAULT_START, timeout: float = 10.0) -> None:
        if timeout <= 0:
            raise ConfigurationError(f"the Yahoo timeout must be positive seconds, not {timeout}")
        self.start = start
        self.timeout = float(timeout)

    def describe(self) -> str:
        return "Yahoo Finance (yfinance)"

    def window(self, ticker: str, context: FetchContext) -> tuple[dt.date, dt.date | None]:
        """The first and last dates (inclusive) to ask for ``ticker``."""
        last = context.last_dates.get(ticker)
        if last is None:
            last = context.last_dates.get(ticker.upper())
        start = self.start if last is None else last + dt.timedelta(days=1)
        return start, context.as_of

    def fetch(self, context: FetchContext) -> Iterator[FetchedInput]:
        """Yield one input per ticker of ``context`` with days to fetch.

        Raises:
            ConfigurationError: yfinance is not installed.
        """
        yfinance = import_yfinance()
        for ticker in sorted({ticker.strip() for ticker in context.tickers if ticker.strip()}):
            start, end = self.window(ticker, context)
            if end is not None and start > end:
                logger.debug("%s: up to date through %s; not requested", ticker, end)
                continue
            if end is not None and not _has_weekday(start, end):
                logger.debug("%s: no weekday from %s to %s; not requested", ticker, start, end)
                continue
            yield self._fetch_one(yfinance, ticker, start, end, context.max_input_bytes)

    def _fetch_one(
        self,
        yfinance: ModuleType,
        ticker: str,
        start: dt.date,
        end: dt.date | None,
        limit: int | None = None,
    ) -> FetchedInput:
        origin = f"yahoo://{ticker}?start={start.isoformat()}"
        if end is not None:
            origin += f"&end={end.isoformat()}"
        logger.debug("Yahoo Finance: daily history of %s from %s to %s", ticker, start, end)
        try:
            frame = yfinance.Ticker(ticker).history(
                start=start.isoformat(),
                end=None if end is None else (end + dt.timedelta(days=1)).isoformat(),
                interval="1d",
                auto_adjust=False,
                actions=False,
                timeout=self.timeout,
            )
        except Exception as exc:  # noqa: BLE001 - yfinance and its HTTP clients raise many kinds
            error = _failure(exc)
            logger.warning("%s: %s", origin, error)
            return FetchedInput(origin, FEED, "", error=error)
        if frame is None or len(frame) == 0:
            span = f"from {start}" + ("" if end is None else f" to {end}")
            error = (
                f"Yahoo Finance returned no prices for {ticker} {span}: "
                f"{_recorded_error(ticker) or _EMPTY_HINT}"
            )
            logger.warning("%s: %s", origin, error)
            return FetchedInput(origin, FEED, "", error=error)
        if limit is not None and len(frame) * MIN_ROW_BYTES > limit:
            return _too_large(origin, None, limit, f"{len(frame)} rows")
        try:
            text = history_to_csv(frame, start, end)
        except ValueError as exc:
            return FetchedInput(origin, FEED, "", error=f"Yahoo Finance answered {exc}")
        content = text.encode()
        if limit is not None and len(content) > limit:
            return _too_large(origin, len(content), limit, sha256_bytes(content))
        version = sha256_bytes(content)
        return FetchedInput(
            origin,
            FEED,
            version,
            parse=lambda: parse_csv_text(text, origin, origin, version, ticker=ticker),
        )


def _too_large(origin: str, size: int | None, limit: int, content: str) -> FetchedInput:
    """A history over the size limit: rejected whole by the ingest, recorded in the
    manifest (under a version of the content and the limit, so a higher limit reads it)."""
    problem = over_limit(size, limit, "rejected")
    logger.warning("%s: %s", origin, problem)
    version = sha256_bytes(f"{content}|{size}|{limit}".encode())
    return too_large_input(origin, FEED, version, problem, limit)


_EMPTY_HINT = "an unknown or delisted ticker, a market holiday, or Yahoo Finance unreachable"


def history_to_csv(frame: pd.DataFrame, start: dt.date, end: dt.date | None) -> str:
    """yfinance's daily history as single-ticker CSV text, rows from ``start`` to ``end``.

    The dates are the index's calendar dates in the exchange's time zone
    (yfinance stamps daily rows at local midnight). Prices are written in
    as the shortest text of the single-precision number Yahoo quotes (or in
    full when a value is not one, e.g. adjusted), volumes as whole numbers, and
    missing values as empty fields. A ``download``-style frame with a
    (price, ticker) column index is read by its first level.

    Raises:
        ValueError: the frame has no ``Close`` column.
    """
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = frame.columns.get_level_values(0)
    present = [name for name in HISTORY_COLUMNS if name in frame.columns]
    if "Close" not in present:
        raise ValueError(
            f"without a Close column; its columns are {', '.join(map(str, frame.columns))}"
        )
    dates = pd.DatetimeIndex(frame.index)
    if dates.tz is not None:
        dates = dates.tz_localize(None)
    days = pd.Series(dates.date, index=frame.index)
    keep = days >= start
    if end is not None:
        keep &= days <= end
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Date", *present])
    for day, values in zip(
        days[keep], frame.loc[keep.to_numpy(), present].itertuples(index=False), strict=True
    ):
        writer.writerow(
            [day.isoformat()]
            + [_field(value, name == "Volume") for name, value in zip(present, values, strict=True)]
        )
    return buffer.getvalue()


def _field(value: Any, whole: bool) -> str:
    if value is None or value is pd.NA:
        return ""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if whole and value.is_integer():
            return str(int(value))
        # Yahoo quotes in single precision: 172.44, not 172.44000244140625.
        return float32_text(value) or repr(value)
    return str(value)


def _has_weekday(start: dt.date, end: dt.date) -> bool:
    days = (end - start).days + 1
    return days >= 7 or any(
        (start + dt.timedelta(days=offset)).weekday() < 5 for offset in range(days)
    )


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, requests errors
        return True
    names = " ".join(kind.__name__ for kind in type(exc).__mro__)
    return "Connection" in names or "Timeout" in names or "Resolve" in names


def _failure(exc: BaseException) -> str:
    detail = f"{type(exc).__name__}: {_one_line(exc)}"
    if _is_network_error(exc):
        return f"Yahoo Finance unreachable: {detail}"
    return f"Yahoo Finance failed: {detail}"


def _recorded_error(ticker: str) -> str | None:
    """The error yfinance recorded for ``ticker`` when it returned an empty frame, if any."""
    shared = sys.modules.get("yfinance.shared")
    errors = getattr(shared, "_ERRORS", None)
    if not isinstance(errors, dict):
        return None
    message = errors.get(ticker.upper()) or errors.get(ticker)
    return _one_line(message) if message else None


def _one_line(value: object) -> str:
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
