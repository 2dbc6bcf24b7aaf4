"""Read price files in the layouts people have, into one long frame.

Three layouts are recognised from the header, in CSV, gzipped CSV or Parquet:

* **long**: ``ticker`` (or ``symbol``), ``date`` and ``close``, with optional
  ``open``, ``high``, ``low``, ``adj_close`` and ``volume``;
* **single ticker**, the tutorial's layout: ``Date,Open,High,Low,Close,Adj Close,Volume``
  with no ticker column; the ticker is the file name without its suffixes
  (``AAPL.csv`` holds AAPL);
* **wide**: ``date`` first, then one column of closes per ticker; an empty cell
  means the ticker did not trade that day and is not a row.

Header names are matched case-insensitively, with spaces and hyphens read as
underscores. Values that cannot be parsed raise ``InputFileError`` naming the
file, the line and the value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as c
from pipeline.errors import InputFileError

logger = logging.getLogger(__name__)

#: Suffixes of the files a folder source picks up.
PRICE_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
#: A ticker: capital letters and digits, optionally with ``.``, ``-``, ``_``, ``^`` or ``=``.
TICKER_PATTERN = re.compile(r"^[A-Z0-9^][A-Z0-9.\-_^=]{0,15}$")

_DATE_ALIASES = ("date", "trade_date", "datetime", "timestamp")
_TICKER_ALIASES = ("ticker", "symbol")
_FIELD_ALIASES = {
    c.OPEN: ("open",),
    c.HIGH: ("high",),
    c.LOW: ("low",),
    c.CLOSE: ("close",),
    c.ADJ_CLOSE: ("adj_close", "adjclose", "adjusted_close"),
    c.VOLUME: ("volume",),
}


def normalise_header(name: object) -> str:
    """``"Adj Close"`` -> ``"adj_close"``: lower case, spaces and hyphens as underscores."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in PRICE_FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def ticker_from_file_name(path: Path) -> str:
    """The ticker a single-ticker file holds: its name without suffixes, upper-cased."""
    name = path.name
    suffix = _suffix(path)
    stem = name[: -len(suffix)] if name.lower().endswith(suffix) else path.stem
    return stem.strip().upper()


def expand_sources(paths: Iterable[Path | str]) -> list[Path]:
    """Files to ingest: each file as given, each folder's price files sorted by name.

    Raises:
        InputFileError: a path does not exist or a folder holds no price file.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and _suffix(p) in PRICE_FILE_SUFFIXES
            )
            if not found:
                raise InputFileError(
                    f"folder {path} holds no price file ({', '.join(PRICE_FILE_SUFFIXES)})"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputFileError(f"input file {path} does not exist")
    return files


def _read_raw(path: Path) -> tuple[pd.DataFrame, int]:
    """The file's cells as strings, and the number of lines before the first data row."""
    suffix = _suffix(path)
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
            return frame, 0
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        return frame, 1
    except FileNotFoundError as exc:
        raise InputFileError(f"input file {path} does not exist") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputFileError(f"{path}: the file is empty") from exc
    except pd.errors.ParserError as exc:
        raise InputFileError(f"{path}: not a readable CSV file: {exc}") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(f"{path}: cannot read the file: {exc}") from exc


def _locate(path: Path, header_lines: int, position: int) -> str:
    """Where a data row is, for error messages: ``file, line N`` or ``file, row N``."""
    if header_lines:
        return f"{path}, line {position + header_lines + 1}"
    return f"{path}, row {position + 1}"


def _parse_dates(values: pd.Series, path: Path, header_lines: int) -> pd.Series:
    text = values.astype(str).str.strip()
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy().nonzero()[0]
    if len(bad):
        first = int(bad[0])
        raise InputFileError(
            f"{_locate(path, header_lines, first)}: cannot parse date {values.iloc[first]!r} "
            f"(expected YYYY-MM-DD){_more(len(bad))}"
        )
    return parsed.dt.normalize()


def _more(count: int) -> str:
    return f"; {count - 1} more such rows" if count > 1 else ""


def _parse_numbers(
    values: pd.Series, path: Path, header_lines: int, column: str, *, required: bool
) -> pd.Series:
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        text = values.astype(str).str.strip()
        blank = text.isin(["", "nan", "NaN", "null", "NULL", "None"])
        numbers = pd.to_numeric(text.where(~blank), errors="coerce")
        bad = (numbers.isna() & ~blank).to_numpy().nonzero()[0]
    else:
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        blank = numbers.isna()
        bad = np.array([], dtype=int)
    if len(bad):
        first = int(bad[0])
        raise InputFileError(
            f"{_locate(path, header_lines, first)}: {column} {values.iloc[first]!r} "
            f"is not a number{_more(len(bad))}"
        )
    if required:
        missing = blank.to_numpy().nonzero()[0]
        if len(missing):
            first = int(missing[0])
            raise InputFileError(
                f"{_locate(path, header_lines, first)}: {column} is missing{_more(len(missing))}"
            )
    numbers = numbers.astype(float)
    if column != c.VOLUME:
        finite = numbers.dropna()
        bad_price = finite.index[~np.isfinite(finite) | (finite <= 0)]
        if len(bad_price):
            first = values.index.get_loc(bad_price[0])
            raise InputFileError(
                f"{_locate(path, header_lines, first)}: {column} {values.iloc[first]!r} "
                f"is not a positive price{_more(len(bad_price))}"
            )
    return numbers


def _check_tickers(tickers: pd.Series, path: Path, header_lines: int) -> pd.Series:
    upper = tickers.astype(str).str.strip().str.upper()
    bad = (~upper.str.match(TICKER_PATTERN)).to_numpy().nonzero()[0]
    if len(bad):
        first = int(bad[0])
        raise InputFileError(
            f"{_locate(path, header_lines, first)}: {tickers.iloc[first]!r} is not a ticker "
            f"symbol (letters, digits and . - _ ^ =, at most 16){_more(len(bad))}"
        )
    return upper


def _pick(columns: dict[str, str], aliases: Iterable[str]) -> str | None:
    for alias in aliases:
        if alias in columns:
            return columns[alias]
    return None


def read_price_file(path: Path) -> pd.DataFrame:
    """Read one price file into the normalised long frame.

    Returns:
        A frame with the columns of ``columns.PRICE_COLUMNS``: ``trade_date`` as
        a ``datetime64`` day, prices as floats (NaN where absent), ``source``
        the file name. Duplicate ``(ticker, trade_date)`` rows keep the last.

    Raises:
        InputFileError: the file is missing, empty, in no known layout, or
            holds a value that cannot be parsed; the message names file and line.
    """
    raw, header_lines = _read_raw(path)
    if raw.empty and len(raw.columns) == 0:
        raise InputFileError(f"{path}: the file is empty")
    by_name = {normalise_header(name): name for name in raw.columns}
    date_col = _pick(by_name, _DATE_ALIASES)
    if date_col is None:
        raise InputFileError(
            f"{path}: no date column (expected one of {', '.join(_DATE_ALIASES)}); "
            f"found {', '.join(map(str, raw.columns))}"
        )
    ticker_col = _pick(by_name, _TICKER_ALIASES)
    close_col = _pick(by_name, _FIELD_ALIASES[c.CLOSE])
    if close_col is not None:
        frame = _read_long(raw, path, header_lines, by_name, date_col, ticker_col, close_col)
    else:
        frame = _read_wide(raw, path, header_lines, date_col)
    before = len(frame)
    frame = frame.drop_duplicates([c.TICKER, c.TRADE_DATE], keep="last")
    if len(frame) < before:
        logger.warning(
            "%s: %d duplicate (ticker, date) rows; the last of each was kept",
            path,
            before - len(frame),
        )
    frame[c.SOURCE] = path.name
    return (
        frame.loc[:, list(c.PRICE_COLUMNS)]
        .sort_values([c.TICKER, c.TRADE_DATE])
        .reset_index(drop=True)
    )


def _read_long(
    raw: pd.DataFrame,
    path: Path,
    header_lines: int,
    by_name: dict[str, str],
    date_col: str,
    ticker_col: str | None,
    close_col: str,
) -> pd.DataFrame:
    frame = pd.DataFrame(index=raw.index)
    if ticker_col is None:
        ticker = ticker_from_file_name(path)
        if not TICKER_PATTERN.match(ticker):
            raise InputFileError(
                f"{path}: a single-ticker file must be named after its ticker "
                f"(e.g. AAPL.csv); {ticker!r} is not a ticker symbol"
            )
        frame[c.TICKER] = ticker
    else:
        frame[c.TICKER] = _check_tickers(raw[ticker_col], path, header_lines)
    frame[c.TRADE_DATE] = _parse_dates(raw[date_col], path, header_lines)
    frame[c.CLOSE] = _parse_numbers(raw[close_col], path, header_lines, c.CLOSE, required=True)
    for field in c.OPTIONAL_PRICE_FIELDS:
        column = _pick(by_name, _FIELD_ALIASES[field])
        if column is None:
            frame[field] = np.nan
        else:
            frame[field] = _parse_numbers(raw[column], path, header_lines, field, required=False)
    return frame


def _read_wide(raw: pd.DataFrame, path: Path, header_lines: int, date_col: str) -> pd.DataFrame:
    ticker_cols = [name for name in raw.columns if name != date_col]
    if not ticker_cols:
        raise InputFileError(
            f"{path}: no close column and no ticker columns; expected a long file "
            "(ticker,date,close), a single-ticker file (Date,...,Close,...) or a wide "
            "file (date, then one column per ticker)"
        )
    tickers = []
    for position, name in enumerate(ticker_cols, start=2):
        ticker = str(name).strip().upper()
        if not TICKER_PATTERN.match(ticker):
            raise InputFileError(
                f"{path}, line 1: column {position} header {name!r} is not a ticker symbol "
                "(letters, digits and . - _ ^ =, at most 16)"
            )
        tickers.append(ticker)
    dates = _parse_dates(raw[date_col], path, header_lines)
    parts = []
    for name, ticker in zip(ticker_cols, tickers, strict=True):
        closes = _parse_numbers(raw[name], path, header_lines, f"close of {ticker}", required=False)
        present = closes.notna()
        parts.append(
            pd.DataFrame({c.TICKER: ticker, c.TRADE_DATE: dates[present], c.CLOSE: closes[present]})
        )
    frame = pd.concat(parts, ignore_index=True)
    for field in c.OPTIONAL_PRICE_FIELDS:
        frame[field] = np.nan
    return frame
