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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import columns as c
from pipeline.db.bulk.rows import packed_key
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
    elsewhere: never a guess, never an error.

    Each distinct text is parsed once: a file of 252,000 rows holds a few hundred
    dates, and the regular expression runs in Python (0.25 s per 252,000 rows).
    """
    codes, uniques = pd.factorize(text)
    day_text = pd.Series(uniques, dtype=object).astype(str).str.extract(_WHOLE_DATE, expand=False)
    distinct = pd.to_datetime(day_text, errors="coerce", format="%Y-%m-%d").to_numpy()
    return pd.Series(np.append(distinct, np.datetime64("NaT"))[codes], index=text.index)


def _matches(text: pd.Series, pattern: re.Pattern[str]) -> np.ndarray:
    """Whether each text matches ``pattern`` (``re.match``), tried once per distinct text."""
    codes, uniques = pd.factorize(text)
    found = np.array([bool(pattern.match(str(value))) for value in uniques] + [False], dtype=bool)
    return found[codes]


def _stripped(values: pd.Series, stripped: bool = False) -> pd.Series:
    """``values`` as stripped text (pandas' Arrow-backed strings), ``""`` for a null;
    not stripped again when the reader did (``stripped``)."""
    text = values.astype(str)
    return (text if stripped else text.str.strip()).fillna("")


#: Per ticker, the newest stored ``(date, close)`` before a date; or a function giving
#: them for each ticker's date.
PreviousCloses = (
    Mapping[str, tuple[dt.date, float]]
    | Callable[[Mapping[str, dt.date]], Mapping[str, tuple[dt.date, float]]]
)


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
        """Each row's exchange: its ticker's, else ``default_exchange`` (looked up once
        per distinct ticker)."""
        codes, uniques = pd.factorize(tickers)
        known = self.exchanges
        names = [known.get(ticker) or self.default_exchange for ticker in uniques]
        mapped = np.array([*names, self.default_exchange], dtype=object)[codes]
        return pd.Series(mapped, index=tickers.index, dtype=object)


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
        if isinstance(messages, str):
            texts = [messages] * len(positions)
        else:  # gathered at once: a Series looked up row by row costs 20 µs a row
            texts = pd.Series(messages()).iloc[positions].tolist()
        for position, text in zip(positions.tolist(), texts, strict=True):
            self.codes.setdefault(position, []).append(code)
            self.messages.setdefault(position, []).append(text)

    def bad(self) -> np.ndarray:
        mask = np.zeros(self.size, dtype=bool)
        mask[list(self.codes)] = True
        return mask


#: A number as files write them (``12.5``, ``-3``, ``.5``, ``1e6``): Arrow's cast gives the
#: same doubles as ``pd.to_numeric`` for this form (tests/ingest/test_validate.py).
_PLAIN_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_MISSING_TEXTS = pa.array(sorted(MISSING_TOKENS), type=pa.large_string())


def _numbers(text: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parsed values, a mask of absent values, and a mask of unparseable ones.

    Plain decimals (nearly every field) are cast by Arrow; the rest (absent values,
    ``inf``, ``1_000``, words) are looked at alone, by ``pd.to_numeric`` as before.
    """
    array = pa.array(text, type=pa.large_string())
    size = len(array)
    try:
        # Arrow's parser gives a finite double only for a plain decimal (its other forms
        # are inf, infinity and nan): when every value is finite, every field was one.
        values = np.array(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False))
    except pa.ArrowInvalid:
        values = None
    if values is not None and np.isfinite(values).all():
        nothing = np.zeros(size, dtype=bool)
        return pd.Series(values, index=text.index), nothing, nothing
    plain_mask = pc.match_substring_regex(array, _PLAIN_NUMBER).to_numpy(zero_copy_only=False)
    values = np.full(size, np.nan)
    if plain_mask.any():
        positions = np.flatnonzero(plain_mask)
        values[positions] = pc.cast(array.take(positions), pa.float64()).to_numpy()
    others = np.flatnonzero(~plain_mask)
    rest = array.take(others)
    absent = np.zeros(size, dtype=bool)
    absent[others] = pc.is_in(pc.utf8_lower(rest), value_set=_MISSING_TEXTS).to_numpy(
        zero_copy_only=False
    )
    odd = np.flatnonzero(~plain_mask & ~absent)
    if len(odd):
        odd_text = text.iloc[odd]
        # float() would read "1_000" as 1000; a feed that writes that is not trusted.
        cleaned = odd_text.where(~odd_text.str.contains("_", regex=False), "not a number")
        values[odd] = pd.to_numeric(cleaned, errors="coerce").astype(float).to_numpy()
    unparseable = np.isnan(values) & ~absent
    return pd.Series(values, index=text.index), absent, unparseable


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
    previous_closes: PreviousCloses | None = None,
) -> ValidatedBatch:
    """Split a raw batch into valid rows, rejected rows, deferred rows and flags.

    Args:
        batch: the rows as read.
        rules: as-of date, jump threshold and exchanges.
        previous_closes: per ticker, the newest stored ``(date, close)``
            before its first valid row's date, for the jump check of that row; or
            a function that looks them up, given each ticker's first valid date
            (called once, with the tickers of the valid rows only).

    Returns:
        ``valid`` in the normalised layout (``columns.PRICE_COLUMNS`` plus
        ``line``), sorted by ticker and date; ``rejected`` with the raw values
        and every reason; the count of deferred rows; and the flags.
    """
    rules = rules or ValidationRules()
    frame = batch.frame.reset_index(drop=True)
    size = len(frame)
    reasons = _Reasons(size)

    misshapen = (frame[SHAPE_ERROR].astype(str).fillna("") != "").to_numpy(dtype=bool)
    reasons.add(misshapen, "shape", lambda: frame[SHAPE_ERROR].astype(str))

    done = batch.stripped
    tickers = _stripped(frame[c.TICKER], done).str.upper()
    bad_ticker = ~_matches(tickers, TICKER_PATTERN)
    _add_ticker_reasons(reasons, bad_ticker, tickers, frame[c.TICKER])

    date_text = _stripped(frame[DATE], done)
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
        text = _stripped(frame[name], done)
        parsed, missing, unparseable = _numbers(text)
        values[name], absent[name] = parsed, missing
        if name == c.CLOSE:
            reasons.add(missing & ~misshapen, "close_missing", "close is missing")
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
    # Ticker and date packed into one integer per row (codes in the tickers' sorted
    # order): duplicates and the order of the valid rows come from it in NumPy.
    codes = pd.factorize(tickers, sort=True)[0].astype(np.int64)
    days = trade_dates.to_numpy().astype("datetime64[D]").astype(np.int64)
    positions = np.flatnonzero(candidate)
    key = packed_key([codes[positions], days[positions]]) if len(positions) else None
    ordered = key is not None and bool(np.all(key[1:] > key[:-1]))
    if ordered:
        unique = True
    elif key is not None:
        sorted_key = np.sort(key)
        unique = bool(np.all(sorted_key[1:] != sorted_key[:-1]))
    else:
        unique = len(positions) == 0
    if not unique:
        keys = pd.DataFrame({c.TICKER: tickers, c.TRADE_DATE: trade_dates})[candidate]
        later = keys.duplicated([c.TICKER, c.TRADE_DATE], keep="last")
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
        ordered = False

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

    chosen = np.flatnonzero(candidate)
    if not ordered:  # by ticker and date; most files come sorted so
        chosen = chosen[np.lexsort((days[chosen], codes[chosen]))]
    valid = pd.DataFrame(
        {
            c.TICKER: tickers.iloc[chosen].reset_index(drop=True),
            c.TRADE_DATE: trade_dates.to_numpy()[chosen],
            **{name: values[name].to_numpy()[chosen] for name in NUMBER_FIELDS},
            c.SOURCE: batch.source,
            LINE: frame[LINE].to_numpy()[chosen].astype(int),
        }
    )
    valid = valid.loc[:, [*c.PRICE_COLUMNS, LINE]]
    flags = _flags(valid, rules, previous_closes or {})
    return ValidatedBatch(batch, valid, rejected, int(deferred.sum()), flags)


def _latest_sessions(tickers: pd.Series, rules: ValidationRules) -> pd.Series:
    """Per row, the latest session of its ticker's exchange at ``rules.now`` (the
    exchange's local date then, or the session before it)."""
    assert rules.now is not None
    codes, exchanges = pd.factorize(rules.exchange_of(tickers))
    limits = []
    for exchange in exchanges:
        local = pd.Timestamp(rules.now).tz_convert(exchange_timezone(exchange)).date()
        limits.append(np.datetime64(previous_session(local, exchange), "ns"))
    per_row = np.array([*limits, np.datetime64("NaT", "ns")], dtype="datetime64[ns]")[codes]
    return pd.Series(per_row, index=tickers.index)


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
    rows: pd.DataFrame, positions: np.ndarray, flag: str, detail: pd.Series | str
) -> pd.DataFrame:
    """Flag the rows of ``rows`` at ``positions``; ``detail`` per flagged row, or one text."""
    return pd.DataFrame(
        {
            c.TICKER: rows[c.TICKER].iloc[positions].to_numpy(),
            c.TRADE_DATE: rows[c.TRADE_DATE].to_numpy()[positions],
            "flag": flag,
            "detail": detail if isinstance(detail, str) else detail.to_numpy(),
            LINE: rows[LINE].to_numpy()[positions],
        }
    )


def _flags(
    valid: pd.DataFrame,
    rules: ValidationRules,
    previous_closes: PreviousCloses,
) -> pd.DataFrame:
    """Jumps and closed days of ``valid`` (sorted by ticker and date)."""
    parts = []
    if valid.empty:
        return pd.DataFrame(columns=list(FLAG_COLUMNS))
    tickers = valid[c.TICKER]
    codes = pd.factorize(tickers)[0]
    close = valid[c.CLOSE].to_numpy(dtype=np.float64)
    starts = np.ones(len(valid), dtype=bool)  # each ticker's first row
    starts[1:] = codes[1:] != codes[:-1]
    previous = np.empty(len(valid))
    previous[1:] = close[:-1]
    previous[starts] = np.nan
    first_tickers = tickers[starts].to_numpy()
    if callable(previous_closes):
        first_days = pd.DatetimeIndex(valid[c.TRADE_DATE].to_numpy()[starts]).date
        previous_closes = previous_closes(dict(zip(first_tickers, first_days, strict=True)))
    if previous_closes:
        stored = {ticker: close for ticker, (_, close) in previous_closes.items()}
        previous[starts] = [stored.get(ticker, np.nan) for ticker in first_tickers]
    with np.errstate(invalid="ignore", divide="ignore"):
        move = close / previous - 1.0
        jump = np.abs(move) > rules.jump_threshold
    if jump.any():
        detail = (
            "close moved "
            + (pd.Series(move[jump]) * 100).round(1).astype(str)
            + "% from "
            + pd.Series(previous[jump]).round(6).astype(str)
        )
        parts.append(_flagged(valid, np.flatnonzero(jump), "jump", detail))
    exchanges = rules.exchange_of(tickers).to_numpy()
    for exchange in sorted(set(exchanges)):
        rows = np.flatnonzero(exchanges == exchange)
        closed = closed_days(valid[c.TRADE_DATE].to_numpy()[rows], exchange)
        if closed.any():
            parts.append(
                _flagged(valid, rows[closed], "closed_day", f"{exchange} did not trade that day")
            )
    if not parts:
        return pd.DataFrame(columns=list(FLAG_COLUMNS))
    return pd.concat(parts, ignore_index=True).loc[:, list(FLAG_COLUMNS)]
