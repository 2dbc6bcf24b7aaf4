"""Check every raw row before it touches ``prices``.

Hand-written, vectorised checks rather than a schema library: each rule is a
boolean mask over the batch with its own message, so a rejected row carries
every reason that applies, with its values, and the rules that need more
than one row (duplicates, price jumps against the stored history) sit beside
the others. pandera was considered; its failure cases would have to be mapped
back to lines and messages, and the cross-row rules written by hand anyway.

Rules (``reason_code``: what it means):

* ``shape``: the line has more or fewer fields than the header;
* ``ticker``: missing, or not matching ``TICKER_PATTERN`` (capital letters and
  digits with ``. - _ ^ =``, at most 16, e.g. ``BRK.B``, ``^GSPC``, ``EURUSD=X``);
  symbols are upper-cased first;
* ``date``: missing or not a whole date: ``YYYY-MM-DD`` exactly (a midnight
  time without a zone, ``2024-01-03T00:00:00``, as some exporters write dates,
  is that date); a partial date (``2018-03``, ``2018``), a compact one
  (``20180415``), a time of day or a time zone is rejected rather than guessed
  (``2018-03`` read as March 1st would overwrite a real close), as is a date
  before ``earliest`` (1800-01-01: ``0001-01-01`` is a placeholder, not a day);
* ``future``: dated after the latest session of the ticker's exchange at the
  time of the run (its local date then): no close can exist yet, and such a
  row would make every later as-of date stale;
* ``close_missing``: no close;
* ``number``: a price or volume that is not a number;
* ``not_finite``: a price or volume that is infinite;
* ``not_positive``: a price (open, high, low, close, adjusted close) of zero or less;
* ``implausible``: a price above ``max_price`` (10^9, ``PRICECAST_MAX_PRICE``);
* ``negative_volume``: a volume below zero;
* ``high_below_low``: both given and high < low;
* ``close_outside_range``: close above high or below low;
* ``duplicate``: the same ticker and date again in the batch; **the last
  occurrence wins** (vendors append corrections), earlier ones are rejected
  naming the line that superseded them.

Rows dated after the as-of date are *deferred*: not loaded, not rejected,
and counted, for the run whose as-of date covers them.

Flags, which never drop a row (``price_flags``):

* ``jump``: the close moved more than ``jump_threshold`` (default 25%) from
  the ticker's previous close, in the batch or already stored (splits do this);
* ``closed_day``: the date is not a trading day of the ticker's exchange.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline import columns as c
from pipeline.ingest.batch import DATE, LINE, RAW, SHAPE_ERROR, RawBatch
from pipeline.ingest.readers import TICKER_PATTERN
from pipeline.trading_calendar import (
    DEFAULT_EXCHANGE,
    closed_days,
    exchange_timezone,
    previous_session,
)

#: Texts read as "no value".
MISSING_TOKENS = frozenset({"", "null", "none", "na", "n/a", "nan", "-"})
PRICE_FIELDS = (c.OPEN, c.HIGH, c.LOW, c.CLOSE, c.ADJ_CLOSE)
NUMBER_FIELDS = (*PRICE_FIELDS, c.VOLUME)

REJECTED_COLUMNS = (LINE, c.TICKER, DATE, RAW, "reason_code", "reason")
FLAG_COLUMNS = (c.TICKER, c.TRADE_DATE, "flag", "detail", LINE)


#: A price above this is rejected: no instrument we read is quoted that high, and one
#: such value (1e308) once reached the model and its forecasts.
MAX_PRICE = 1e9
#: A price dated before this is rejected: no exchange series we read starts earlier.
EARLIEST_DATE = dt.date(1800, 1, 1)
#: A whole ISO date, optionally with a midnight time and no zone (what a spreadsheet or
#: a timestamp column exports for a date); group 1 is the date.
_WHOLE_DATE = r"^(\d{4}-\d{2}-\d{2})(?:[T ]00:00(?::00(?:\.0+)?)?)?$"
#: A date text with a time of day or a zone, named as such when it is rejected.
_TIMED = r"[T ]\d{1,2}:|[+-]\d{2}:?\d{2}$|Z$"


def whole_dates(text: pd.Series) -> pd.Series:
    """The dates of ``text`` (stripped) that are whole dates (``_WHOLE_DATE``), NaT
    elsewhere: never a guess, never an error."""
    day_text = text.str.extract(_WHOLE_DATE, expand=False)
    return pd.to_datetime(day_text, errors="coerce", format="%Y-%m-%d")


@dataclass(frozen=True)
class ValidationRules:
    """What a batch is checked against.

    Attributes:
        as_of: rows after this date are deferred; ``None`` defers nothing.
        jump_threshold: a one-day move beyond this fraction is flagged.
        exchanges: each ticker's exchange, for the trading-day check; tickers
            not in it use ``default_exchange``.
        default_exchange: the exchange of unknown tickers.
        now: the time of the run (time-zone aware); rows dated after their exchange's
            latest session at that time are rejected (``future``). ``None`` checks nothing.
        earliest: rows dated before it are rejected (``date``).
        max_price: rows with a price field above it are rejected (``implausible``).
    """

    as_of: dt.date | None = None
    jump_threshold: float = 0.25
    exchanges: Mapping[str, str] = field(default_factory=dict)
    default_exchange: str = DEFAULT_EXCHANGE
    now: dt.datetime | None = None
    earliest: dt.date = EARLIEST_DATE
    max_price: float = MAX_PRICE

    def exchange_of(self, tickers: pd.Series) -> pd.Series:
        """Each row's exchange: its ticker's, else ``default_exchange``."""
        mapped = tickers.map(dict(self.exchanges)).astype(object)
        return mapped.where(mapped.notna(), self.default_exchange)


@dataclass
class ValidatedBatch:
    """A batch split into rows to load, rows to quarantine, rows deferred, and flags.

    ``rows_read == len(valid) + len(rejected) + deferred`` always holds.
    """

    batch: RawBatch
    valid: pd.DataFrame
    rejected: pd.DataFrame
    deferred: int
    flags: pd.DataFrame

    @property
    def rows_read(self) -> int:
        return self.batch.rows


class _Reasons:
    """Collects, per failing row, every code and message that applies (sparse: most
    rows of most batches fail nothing, and a list per row cost 0.5 s per 100,000)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.codes: dict[int, list[str]] = {}
        self.messages: dict[int, list[str]] = {}

    def add(self, mask: np.ndarray, code: str, messages: str | Callable[[], pd.Series]) -> None:
        """Record ``code`` for the rows of ``mask``; ``messages`` is a text, or builds
        one per row of the batch, only called when some row fails (most batches are clean)."""
        positions = np.flatnonzero(mask)
        if not len(positions):
            return
        texts = messages if isinstance(messages, str) else messages()
        for position in positions.tolist():
            self.codes.setdefault(position, []).append(code)
            self.messages.setdefault(position, []).append(
                texts if isinstance(texts, str) else texts.iloc[position]
            )

    def bad(self) -> np.ndarray:
        mask = np.zeros(self.size, dtype=bool)
        mask[list(self.codes)] = True
        return mask


def _numbers(text: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parsed values, a mask of absent values, and a mask of unparseable ones."""
    lowered = text.str.lower()
    absent = lowered.isin(MISSING_TOKENS).to_numpy()
    # float() would read "1_000" as 1000; a feed that writes that is not trusted.
    cleaned = text.where(~text.str.contains("_", regex=False), "not a number")
    values = pd.to_numeric(cleaned.where(~absent), errors="coerce")
    unparseable = values.isna().to_numpy() & ~absent
    return values.astype(float), absent, unparseable


def _quote(text: pd.Series) -> pd.Series:
    return text.astype(str).map(repr)


def _lazy_quote(name: str, text: pd.Series) -> Callable[[], pd.Series]:
    """``name 'value'`` per row, built once and only when a message needs it."""
    built: list[pd.Series] = []

    def quoted() -> pd.Series:
        if not built:
            built.append(f"{name} " + _quote(text))
        return built[0]

    return quoted


def validate_batch(
    batch: RawBatch,
    rules: ValidationRules | None = None,
    previous_closes: Mapping[str, tuple[dt.date, float]] | None = None,
) -> ValidatedBatch:
    """Split a raw batch into valid rows, rejected rows, deferred rows and flags.

    Args:
        batch: the rows as read.
        rules: as-of date, jump threshold and exchanges.
        previous_closes: per ticker, the newest stored ``(date, close)``
            before the batch's first date, for the jump check of its first row.

    Returns:
        ``valid`` in the normalised layout (``columns.PRICE_COLUMNS`` plus
        ``line``), sorted by ticker and date; ``rejected`` with the raw values
        and every reason; the count of deferred rows; and the flags.
    """
    rules = rules or ValidationRules()
    frame = batch.frame.reset_index(drop=True)
    size = len(frame)
    reasons = _Reasons(size)

    shape = frame[SHAPE_ERROR].astype(str).to_numpy()
    reasons.add(shape != "", "shape", lambda: frame[SHAPE_ERROR].astype(str))

    tickers = frame[c.TICKER].astype(str).str.strip().str.upper()
    bad_ticker = ~tickers.str.match(TICKER_PATTERN).to_numpy()
    _add_ticker_reasons(reasons, bad_ticker, tickers, frame[c.TICKER])

    date_text = frame[DATE].astype(str).str.strip()
    dates = whole_dates(date_text)
    too_early = (dates < pd.Timestamp(rules.earliest)).to_numpy()
    dates = dates.where(~too_early)
    bad_date = dates.isna().to_numpy()
    reasons.add(
        bad_date,
        "date",
        lambda: pd.Series(
            np.select(
                [
                    date_text == "",
                    too_early,
                    date_text.str.contains(_TIMED, regex=True).to_numpy(dtype=bool),
                ],
                [
                    "date is missing",
                    "date " + _quote(date_text) + f" is before {rules.earliest}",
                    "date "
                    + _quote(date_text)
                    + " has a time of day or a time zone; expected the trading day, YYYY-MM-DD",
                ],
                "date " + _quote(date_text) + " is not a date (YYYY-MM-DD)",
            )
        ),
    )

    if rules.now is not None:
        limits = _latest_sessions(tickers, rules)
        future = ~bad_date & (dates.dt.normalize() > limits).to_numpy()
        reasons.add(
            future,
            "future",
            lambda: (
                "date "
                + _quote(date_text)
                + " is after the latest session ("
                + limits.dt.strftime("%Y-%m-%d")
                + ") of its exchange at the time of the run"
            ),
        )

    values: dict[str, pd.Series] = {}
    absent: dict[str, np.ndarray] = {}
    for name in NUMBER_FIELDS:
        text = frame[name].astype(str).str.strip()
        parsed, missing, unparseable = _numbers(text)
        values[name], absent[name] = parsed, missing
        if name == c.CLOSE:
            reasons.add(missing & (shape == ""), "close_missing", "close is missing")
        quoted = _lazy_quote(name, text)
        reasons.add(unparseable, "number", lambda q=quoted: q() + " is not a number")
        infinite = np.isinf(parsed.to_numpy())
        reasons.add(infinite, "not_finite", lambda q=quoted: q() + " is not finite")
        finite = parsed.to_numpy()
        if name in PRICE_FIELDS:
            reasons.add(
                np.nan_to_num(finite, nan=1.0) <= 0,
                "not_positive",
                lambda q=quoted: q() + " is not a positive price",
            )
            reasons.add(
                ~infinite & (np.nan_to_num(finite, nan=0.0) > rules.max_price),
                "implausible",
                lambda q=quoted: (
                    q() + f" is above {rules.max_price:g}, the highest price accepted "
                    "(PRICECAST_MAX_PRICE)"
                ),
            )
        else:
            reasons.add(
                np.nan_to_num(finite, nan=0.0) < 0,
                "negative_volume",
                lambda q=quoted: q() + " is negative",
            )

    high, low, close = (values[name].to_numpy() for name in (c.HIGH, c.LOW, c.CLOSE))
    with np.errstate(invalid="ignore"):
        high_below_low = high < low
        outside = ~high_below_low & ((close > high * (1 + 1e-9)) | (close < low * (1 - 1e-9)))
    reasons.add(
        high_below_low,
        "high_below_low",
        lambda: "high " + values[c.HIGH].astype(str) + " is below low " + values[c.LOW].astype(str),
    )
    reasons.add(
        outside,
        "close_outside_range",
        lambda: (
            "close "
            + values[c.CLOSE].astype(str)
            + " is outside low "
            + values[c.LOW].astype(str)
            + " to high "
            + values[c.HIGH].astype(str)
        ),
    )

    bad = reasons.bad()
    trade_dates = dates.dt.normalize()
    deferred = np.zeros(size, dtype=bool)
    if rules.as_of is not None:
        deferred = ~bad & (trade_dates > pd.Timestamp(rules.as_of)).to_numpy()

    candidate = ~bad & ~deferred
    keys = pd.DataFrame({c.TICKER: tickers, c.TRADE_DATE: trade_dates})[candidate]
    later = keys.duplicated([c.TICKER, c.TRADE_DATE], keep="last")
    if later.any():
        lines = frame[LINE]
        winner = (
            keys.assign(**{LINE: lines[candidate]})
            .groupby([c.TICKER, c.TRADE_DATE])[LINE]
            .transform("last")
        )
        duplicate = np.zeros(size, dtype=bool)
        duplicate[keys.index[later.to_numpy()]] = True
        messages = pd.Series("", index=frame.index, dtype=object)
        messages[keys.index[later.to_numpy()]] = (
            "duplicate of "
            + tickers[keys.index[later.to_numpy()]]
            + " on "
            + date_text[keys.index[later.to_numpy()]]
            + "; superseded by line "
            + winner[later].astype(str)
        )
        reasons.add(duplicate, "duplicate", lambda: messages.reset_index(drop=True))
        candidate &= ~duplicate

    rejected_mask = reasons.bad()
    rejected = pd.DataFrame(
        {
            LINE: frame[LINE][rejected_mask].astype(int).to_numpy(),
            c.TICKER: frame[c.TICKER][rejected_mask].astype(str).to_numpy(),
            DATE: frame[DATE][rejected_mask].astype(str).to_numpy(),
            RAW: batch.raw_of(np.flatnonzero(rejected_mask)),
            "reason_code": [reasons.codes[i][0] for i in np.flatnonzero(rejected_mask)],
            "reason": ["; ".join(reasons.messages[i]) for i in np.flatnonzero(rejected_mask)],
        },
        columns=list(REJECTED_COLUMNS),
    )

    valid = pd.DataFrame(
        {
            c.TICKER: tickers[candidate].to_numpy(),
            c.TRADE_DATE: trade_dates[candidate].to_numpy(),
            **{name: values[name][candidate].to_numpy() for name in NUMBER_FIELDS},
            c.SOURCE: batch.source,
            LINE: frame[LINE][candidate].astype(int).to_numpy(),
        }
    )
    valid = valid.loc[:, [*c.PRICE_COLUMNS, LINE]].sort_values([c.TICKER, c.TRADE_DATE])
    valid = valid.reset_index(drop=True)
    flags = _flags(valid, rules, previous_closes or {})
    return ValidatedBatch(batch, valid, rejected, int(deferred.sum()), flags)


def _latest_sessions(tickers: pd.Series, rules: ValidationRules) -> pd.Series:
    """Per row, the latest session of its ticker's exchange at ``rules.now`` (the
    exchange's local date then, or the session before it)."""
    assert rules.now is not None
    exchanges = rules.exchange_of(tickers)
    limit = {}
    for exchange in exchanges.unique():
        local = pd.Timestamp(rules.now).tz_convert(exchange_timezone(exchange)).date()
        limit[exchange] = pd.Timestamp(previous_session(local, exchange))
    return exchanges.map(limit).astype("datetime64[ns]")


def _add_ticker_reasons(
    reasons: _Reasons, bad: np.ndarray, tickers: pd.Series, raw: pd.Series
) -> None:
    reasons.add(
        bad,
        "ticker",
        lambda: pd.Series(
            np.where(
                tickers.to_numpy() == "",
                "ticker is missing",
                ("ticker " + _quote(raw) + " is not a ticker symbol").to_numpy(),
            )
        ),
    )


def _flagged(
    rows: pd.DataFrame, mask: np.ndarray, flag: str, detail: pd.Series | str
) -> pd.DataFrame:
    """Flag rows of ``rows`` selected by ``mask``."""
    detail_values = detail if isinstance(detail, str) else detail[mask]
    return pd.DataFrame(
        {
            c.TICKER: rows[c.TICKER][mask],
            c.TRADE_DATE: rows[c.TRADE_DATE][mask],
            "flag": flag,
            "detail": detail_values,
            LINE: rows[LINE][mask],
        }
    )


def _flags(
    valid: pd.DataFrame,
    rules: ValidationRules,
    previous_closes: Mapping[str, tuple[dt.date, float]],
) -> pd.DataFrame:
    parts = []
    if valid.empty:
        return pd.DataFrame(columns=list(FLAG_COLUMNS))
    previous = valid.groupby(c.TICKER)[c.CLOSE].shift(1)
    first = previous.isna()
    if previous_closes:
        stored = valid[c.TICKER].map(
            {ticker: close for ticker, (_, close) in previous_closes.items()}
        )
        previous = previous.where(~first, stored)
    move = valid[c.CLOSE] / previous - 1.0
    jump = (move.abs() > rules.jump_threshold).fillna(False).to_numpy()
    if jump.any():
        detail = (
            "close moved "
            + (move * 100).round(1).astype(str)
            + "% from "
            + previous.round(6).astype(str)
        )
        parts.append(_flagged(valid, jump, "jump", detail))
    for exchange, group in valid.groupby(rules.exchange_of(valid[c.TICKER])):
        closed = closed_days(group[c.TRADE_DATE], exchange)
        if closed.any():
            parts.append(
                _flagged(group, closed, "closed_day", f"{exchange} did not trade that day")
            )
    if not parts:
        return pd.DataFrame(columns=list(FLAG_COLUMNS))
    return pd.concat(parts, ignore_index=True).loc[:, list(FLAG_COLUMNS)]
