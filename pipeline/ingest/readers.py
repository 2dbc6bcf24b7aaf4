"""Read price files and CSV text in the layouts people have, into raw batches.

Three layouts are recognised from the header, in CSV, gzipped CSV or Parquet:

* **long**: ``ticker`` (or ``symbol``), ``date`` and ``close``, with optional
  ``open``, ``high``, ``low``, ``adj_close`` and ``volume``;
* **single ticker**, the tutorial's layout: ``Date,Open,High,Low,Close,Adj Close,Volume``
  with no ticker column; the ticker is the file name without its suffixes
  (``AAPL.csv`` holds AAPL), or the one a feed was asked for;
* **wide**: ``date`` first, then one column of closes per ticker; an empty cell
  means the ticker did not trade that day and is not a row.

Header names are matched case-insensitively, with spaces and hyphens read as
underscores. Reading only finds the rows and their fields; the values are
checked by ``validate``. An input that cannot be read at all (empty, not
text, no date column, an HTML page) raises ``BatchRejected`` naming it and,
where it applies, the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as c
from pipeline.errors import InputFileError
from pipeline.files import sha256_bytes
from pipeline.ingest.batch import (
    DATE,
    LINE,
    RAW,
    RAW_COLUMNS,
    SHAPE_ERROR,
    BatchRejected,
    InputTooLarge,
    RawBatch,
)
from pipeline.ingest.fetch import over_limit

#: Suffixes of the files a folder source picks up.
PRICE_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
#: A ticker symbol (``pipeline.columns.TICKER_PATTERN``).
TICKER_PATTERN = c.TICKER_PATTERN

#: Early rejection of inputs that are not prices: the first ``PROBE_ROWS`` rows of a
#: CSV input are read before the rest; when fewer than ``PROBE_MIN_PRICES`` of them
#: have a whole date and a numeric close, the input is rejected whole, the rest unread,
#: instead of being quarantined row by row (a 200 MB junk file once took 900 s and
#: 6.6 GB). An input of fewer rows is read whole and validated row by row.
PROBE_ROWS = 1000
PROBE_MIN_PRICES = 10

_DATE_ALIASES = ("date", "trade_date", "datetime", "timestamp")
_TICKER_ALIASES = ("ticker", "symbol")
_FIELD_ALIASES = {
    c.CLOSE: ("close",),
    c.OPEN: ("open",),
    c.HIGH: ("high",),
    c.LOW: ("low",),
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
        InputFileError: a path does not exist, or is not a file or a folder.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(
                sorted(
                    p for p in path.iterdir() if p.is_file() and _suffix(p) in PRICE_FILE_SUFFIXES
                )
            )
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise InputFileError(
                f"input {path} is neither a file nor a folder (a device, socket or pipe); "
                "give a price file or a drop folder"
            )
        else:
            raise InputFileError(f"input file {path} does not exist")
    return files


def _header_index(names: list[str], origin: str) -> dict[str, int]:
    """Each normalised header name's column.

    Raises:
        BatchRejected: two columns have the same name (``close`` twice: which one is the
            close? Reading one silently dropped the other).
    """
    by_name: dict[str, int] = {}
    for index, name in enumerate(names):
        key = normalise_header(name)
        if key in by_name:
            raise BatchRejected(
                origin,
                f"the header names {key!r} twice (columns {by_name[key] + 1} and {index + 1}); "
                f"the header is {','.join(names)}",
                1,
            )
        by_name[key] = index
    return by_name


def _file_ticker(origin: str) -> str:
    """The ticker of a single-ticker file without a ticker column: its file name.

    Raises:
        BatchRejected: the name is not a ticker symbol.
    """
    ticker = ticker_from_file_name(Path(origin))
    if not TICKER_PATTERN.match(ticker):
        raise BatchRejected(
            origin,
            f"a single-ticker file must be named after its ticker (e.g. AAPL.csv); "
            f"{ticker!r} is not a ticker symbol",
        )
    return ticker


def _pick(columns: dict[str, int], aliases: Iterable[str]) -> int | None:
    for alias in aliases:
        if alias in columns:
            return columns[alias]
    return None


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html", "<?xml", "<head", "<body"))


def parse_csv_text(
    text: str, origin: str, source: str, version: str, ticker: str | None = None
) -> RawBatch:
    """Split CSV text into a raw batch.

    Args:
        text: the whole input.
        origin: its path or URL, for messages.
        source: the name stored with its rows (file name, or URL for feeds).
        version: the SHA-256 of its bytes.
        ticker: the ticker of a single-ticker input; ``None`` takes it from
            ``origin``'s file name when the input has no ticker column.

    Raises:
        BatchRejected: the text is empty, an HTML page, not CSV, or has no date column.
    """
    if not text.strip():
        raise BatchRejected(origin, "the input is empty")
    if _looks_like_html(text):
        raise BatchRejected(origin, "the input is an HTML page, not CSV", 1)
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise BatchRejected(origin, "the input holds NUL bytes; it is not a CSV file", line)
    _probe_head(text, origin, source, version, ticker)
    fast = _arrow_batch(text, origin, source, version, ticker)
    if fast is not None:
        return fast
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        header = next(reader)
        _header_columns([str(name).strip() for name in header], origin)  # before the rows
        records = [(reader.line_num, row) for row in reader if row]
    except csv.Error as exc:
        raise BatchRejected(origin, f"not readable as CSV: {exc}", reader.line_num) from exc
    return _from_rows(header, records, origin, source, version, ticker)


def _probe_head(text: str, origin: str, source: str, version: str, ticker: str | None) -> None:
    """Read the header and first ``PROBE_ROWS`` rows of ``text`` alone, and reject the
    input if its header is not one of prices or its rows are not (``reject_non_prices``).
    Text of fewer rows is left to the full read.

    Raises:
        BatchRejected: the header or the first rows are not prices.
    """
    end = -1
    for _ in range(PROBE_ROWS + 1):
        end = text.find("\n", end + 1)
        if end < 0:
            return
    reader = csv.reader(io.StringIO(text[: end + 1], newline=""), skipinitialspace=True)
    try:
        header = next(reader)
        _header_columns([str(name).strip() for name in header], origin)
        records = [(reader.line_num, row) for row in reader if row]
    except csv.Error:
        return  # the full read says what is wrong, with the line
    reject_non_prices(_from_rows(header, records, origin, source, version, ticker))


def reject_non_prices(batch: RawBatch) -> None:
    """Reject an input whose first ``PROBE_ROWS`` rows are (nearly) all not prices: fewer
    than ``PROBE_MIN_PRICES`` have a whole ``YYYY-MM-DD`` date, a numeric close and the
    header's number of fields. A batch of fewer rows passes (its rows are validated).

    Raises:
        BatchRejected: naming how many rows were prices and the first row that was not.
    """
    if batch.rows < PROBE_ROWS:
        return
    from pipeline.ingest.validate import whole_dates  # validate imports this module

    head = batch.frame.iloc[:PROBE_ROWS]
    dates = whole_dates(head[DATE].astype(str).str.strip()).notna().to_numpy()
    closes = pd.to_numeric(head[c.CLOSE], errors="coerce").to_numpy(dtype=float)
    fitting = (head[SHAPE_ERROR] == "").to_numpy()
    prices = dates & np.isfinite(closes) & fitting
    found = int(prices.sum())
    if found >= PROBE_MIN_PRICES:
        return
    first = int(np.flatnonzero(~prices)[0])
    sample = ",".join(str(value) for value in batch.raw_of(np.array([first]))[0].values())
    raise BatchRejected(
        batch.origin,
        f"not prices: {found} of its first {PROBE_ROWS:,} rows have a whole YYYY-MM-DD date "
        f"and a numeric close (line {head[LINE].iloc[first]} reads {sample[:80]!r}); "
        "rejected whole, the rest unread",
    )


def _plain_lines(text: str) -> bool:
    """Whether every physical line of ``text`` is one record: no quotes (which may
    hold line breaks), no blank line, and no line ending other than ``\n``/``\r\n``.
    Then a record's line number is its position among the lines."""
    if '"' in text or "\n\n" in text or text.startswith(("\n", "\r")):
        return False
    return "\r" not in text or ("\n\r\n" not in text and text.count("\r") == text.count("\r\n"))


#: The characters ``str.strip`` removes that an ASCII text may hold, line ends aside.
_ASCII_SPACES = (" ", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")


def _may_need_trimming(text: str) -> bool:
    """Whether some field of ``text`` may start or end with white space: not when the
    text is ASCII without any (a few fast scans, against trimming every column)."""
    return not text.isascii() or any(space in text for space in _ASCII_SPACES)


def _arrow_batch(
    text: str, origin: str, source: str, version: str, ticker: str | None
) -> RawBatch | None:
    """The long and single-ticker layouts read by pyarrow's CSV reader (C++), or
    ``None`` for the row-by-row reader (quotes, blank lines, wide files).

    Measured (``benchmarks/ingest_rate.py``, 100,000 rows): the row-by-row reader
    took 2.7 s, most of it building Python lists and dictionaries per row; this
    reads the same rows in about 0.2 s. Rows with the wrong number of fields are
    handed back by pyarrow with their line and kept, with their shape error, as
    the row-by-row reader keeps them; the row's fields as a dictionary are built
    only for the rows validation rejects (``RawBatch.raw_of``).
    """
    if not _plain_lines(text):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    end = text.find("\n")
    first = text if end < 0 else text[:end]  # not split(): it would copy the rest
    header = next(csv.reader([first.rstrip("\r")], skipinitialspace=True), [])
    names = [str(name).strip() for name in header]
    by_name = _header_index(names, origin)
    date_index = _pick(by_name, _DATE_ALIASES)
    ticker_index = _pick(by_name, _TICKER_ALIASES)
    close_index = _pick(by_name, _FIELD_ALIASES[c.CLOSE])
    if date_index is None or close_index is None:
        return None  # a wide file, or one the row-by-row reader rejects with its reason
    width = len(names)
    keys = [f"f{index}" for index in range(width)]
    misshapen: list[tuple[int, list[str]]] = []

    def keep(row: pacsv.InvalidRow) -> str:
        fields = next(csv.reader([row.text], skipinitialspace=True), [])
        misshapen.append((row.number, fields))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            read_options=pacsv.ReadOptions(use_threads=False, skip_rows=1, column_names=keys),
            parse_options=pacsv.ParseOptions(invalid_row_handler=keep),
            convert_options=pacsv.ConvertOptions(
                # pandas' own string type holds large strings: no conversion later.
                column_types=dict.fromkeys(keys, pa.large_string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, ValueError):
        return None  # the row-by-row reader says what is wrong, with the line
    lines_total = text.count("\n") + (0 if text.endswith("\n") else 1)
    if table.num_rows + len(misshapen) != lines_total - 1:
        return None  # not one record per line after all
    count = lines_total - 1
    lines = np.arange(2, lines_total + 1, dtype=np.int64)
    shapes = pd.Series("", index=pd.RangeIndex(count), dtype="str")
    raw = np.full(count, None, dtype=object)
    if misshapen:
        # The misshapen rows, padded to the header's width, go back to their lines.
        bad_lines = np.array([line for line, _ in misshapen], dtype=np.int64)
        extra = pa.table(
            {
                key: pa.array(
                    [(row[index].strip() if index < len(row) else "") for _, row in misshapen],
                    type=table.schema.field(key).type,
                )
                for index, key in enumerate(keys)
            }
        )
        good_lines = np.setdiff1d(lines, bad_lines)
        order = np.argsort(np.concatenate([good_lines, bad_lines]), kind="stable")
        table = pa.concat_tables([table, extra]).take(order)
        at = bad_lines - 2  # positions of the misshapen rows in line order
        shapes.iloc[at] = [f"expected {width} fields, found {len(row)}" for _, row in misshapen]
        raw[at] = [dict(zip(names, row, strict=False)) for _, row in misshapen]
    # Arrow-backed columns (pandas' own string type): no Python object per field.
    trim = pc.utf8_trim_whitespace if _may_need_trimming(text) else (lambda values: values)
    fields = {
        index: pd.Series(trim(table.column(index)).to_pandas(), index=pd.RangeIndex(count))
        for index in range(width)
    }
    if ticker_index is None and ticker is None:
        ticker = _file_ticker(origin)
    empty = pd.Series("", index=pd.RangeIndex(count), dtype="str")

    def column(index: int | None) -> pd.Series:
        return empty if index is None else fields[index]

    columns = {
        LINE: lines,
        SHAPE_ERROR: shapes,
        c.TICKER: pd.Series(ticker.strip(), index=pd.RangeIndex(count), dtype="str")
        if ticker_index is None
        else column(ticker_index),
        DATE: column(date_index),
        **{name: column(_pick(by_name, aliases)) for name, aliases in _FIELD_ALIASES.items()},
        RAW: raw,
    }
    layout = "single" if ticker_index is None else "long"
    frame = pd.DataFrame(columns, columns=RAW_COLUMNS)
    originals = {name: fields[index] for index, name in enumerate(names)}
    return RawBatch(origin, source, version, layout, frame, fields=originals, stripped=True)


def _header_columns(
    names: list[str], origin: str
) -> tuple[dict[str, int], int, int | None, int | None]:
    """Each header name's column, and the date, ticker and close columns (no ticker and
    no close: the wide layout).

    Raises:
        BatchRejected: the header names a column twice, has no date column, has a ticker
            but no close column, or is a wide header of the date alone.
    """
    by_name = _header_index(names, origin)
    date_index = _pick(by_name, _DATE_ALIASES)
    if date_index is None:
        raise BatchRejected(
            origin,
            f"no date column (expected one of {', '.join(_DATE_ALIASES)}); "
            f"the header is {','.join(names)}",
            1,
        )
    ticker_index = _pick(by_name, _TICKER_ALIASES)
    close_index = _pick(by_name, _FIELD_ALIASES[c.CLOSE])
    if close_index is None and ticker_index is not None:
        raise BatchRejected(origin, f"no close column; the header is {','.join(names)}", 1)
    if close_index is None and len(names) < 2:
        raise BatchRejected(
            origin,
            "no close column and no ticker columns; expected a long file (ticker,date,close), "
            "a single-ticker file (Date,...,Close,...) or a wide file (date, then one column "
            "per ticker)",
            1,
        )
    return by_name, date_index, ticker_index, close_index


def _from_rows(
    header: list[str],
    records: list[tuple[int, list[str]]],
    origin: str,
    source: str,
    version: str,
    ticker: str | None,
) -> RawBatch:
    names = [str(name).strip() for name in header]
    by_name, date_index, ticker_index, close_index = _header_columns(names, origin)
    if close_index is None:
        return _wide(names, date_index, records, origin, source, version)
    if ticker_index is None and ticker is None:
        ticker = _file_ticker(origin)
    width = len(names)
    fields = {name: _pick(by_name, aliases) for name, aliases in _FIELD_ALIASES.items()}
    # Column by column rather than row by row: a short row is padded with empty
    # fields (and its shape error recorded), a long one keeps its extra fields.
    count = len(records)
    rows = [row + [""] * (width - len(row)) for _, row in records]
    cells = list(zip(*rows, strict=False)) if count else [()] * width

    def stripped(index: int | None) -> list[str]:
        return [""] * count if index is None else [value.strip() for value in cells[index]]

    columns: dict[str, list] = {
        LINE: [line for line, _ in records],
        SHAPE_ERROR: [
            "" if len(row) == width else f"expected {width} fields, found {len(row)}"
            for _, row in records
        ],
        c.TICKER: [ticker] * count if ticker_index is None else stripped(ticker_index),
        DATE: stripped(date_index),
        **{name: stripped(index) for name, index in fields.items()},
        RAW: [dict(zip(names, row, strict=False)) for _, row in records],
    }
    layout = "single" if ticker_index is None else "long"
    return RawBatch(origin, source, version, layout, pd.DataFrame(columns, columns=RAW_COLUMNS))


def _wide(
    names: list[str],
    date_index: int,
    records: list[tuple[int, list[str]]],
    origin: str,
    source: str,
    version: str,
) -> RawBatch:
    date_name = names[date_index]
    columns: dict[str, list] = {name: [] for name in RAW_COLUMNS}
    width = len(names)
    tickers = [
        (index, name, name.upper()) for index, name in enumerate(names) if index != date_index
    ]
    for line, row in records:
        shape = "" if len(row) == width else f"expected {width} fields, found {len(row)}"
        padded = row + [""] * (width - len(row))
        date = padded[date_index].strip()
        for index, name, ticker in tickers:
            value = padded[index].strip()
            if not value and not shape:
                continue  # the ticker did not trade that day
            columns[LINE].append(line)
            columns[SHAPE_ERROR].append(shape)
            columns[c.TICKER].append(ticker)
            columns[DATE].append(date)
            columns[c.CLOSE].append(value)
            for field in (c.OPEN, c.HIGH, c.LOW, c.ADJ_CLOSE, c.VOLUME):
                columns[field].append("")
            columns[RAW].append({date_name: date, name: value})
            if shape:
                break  # a misshapen line is one rejected row, not one per column
    return RawBatch(origin, source, version, "wide", pd.DataFrame(columns, columns=RAW_COLUMNS))


def _decode(payload: bytes, origin: str) -> str:
    try:
        return payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = payload[: exc.start].count(b"\n") + 1
        raise BatchRejected(origin, "not UTF-8 text; is it a CSV file?", line) from exc


def read_file_batch(path: Path) -> RawBatch:
    """Read one price file (CSV, CSV.gz or Parquet) into a raw batch.

    Raises:
        InputFileError: the file does not exist.
        BatchRejected: the file cannot be read at all.
    """
    try:
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputFileError(f"input file {path} does not exist") from exc
    except OSError as exc:
        raise BatchRejected(str(path), f"cannot read the file: {exc.strerror}") from exc
    return parse_file_bytes(path, payload, sha256_bytes(payload))


def parse_file_bytes(
    path: Path, payload: bytes, version: str, max_bytes: int | None = None
) -> RawBatch:
    """Parse the bytes of a price file named ``path`` into a raw batch.

    Args:
        path: the file's path, for messages and its layout (by suffix).
        payload: its bytes.
        version: their SHA-256.
        max_bytes: the most bytes a gzipped file may decompress to (a small file
            can hold gigabytes of text); ``None``: no limit.

    Raises:
        BatchRejected: the content cannot be read at all, or decompresses past ``max_bytes``.
    """
    origin = str(path)
    suffix = _suffix(path)
    if suffix == ".parquet":
        return _parquet_batch(payload, path, version)
    if suffix == ".csv.gz" or payload[:2] == b"\x1f\x8b":
        payload = _gunzip(payload, origin, max_bytes)
    return parse_csv_text(_decode(payload, origin), origin, path.name, version)


def _gunzip(payload: bytes, origin: str, max_bytes: int | None) -> bytes:
    """The decompressed bytes of a gzip file, read no further than ``max_bytes``.

    Raises:
        BatchRejected: not gzip, or more than ``max_bytes`` once decompressed.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(payload)) as stream:
            text = stream.read(-1 if max_bytes is None else max_bytes + 1)
    except (OSError, EOFError) as exc:
        raise BatchRejected(origin, f"not a readable gzip file: {exc}") from exc
    if max_bytes is not None and len(text) > max_bytes:
        problem = "decompressed, " + over_limit(None, max_bytes, "rejected")
        raise InputTooLarge(origin, problem, max_bytes)
    return text


def _parquet_batch(payload: bytes, path: Path, version: str) -> RawBatch:
    origin = str(path)
    try:
        table = pd.read_parquet(io.BytesIO(payload))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
        raise BatchRejected(origin, f"not a readable Parquet file: {exc}") from exc
    header = [str(name) for name in table.columns]
    for name in table.columns:
        if table[name].dtype == np.float32:
            # numpy writes a float32 as its shortest text: 172.44, not 172.44000244140625
            # (``pipeline.precision``).
            column = table[name]
            table[name] = column.astype(str).where(column.notna(), None)
    records = []
    for position, values in enumerate(table.itertuples(index=False, name=None), start=1):
        records.append((position, [_text(value) for value in values]))
    batch = _from_rows(header, records, origin, path.name, version, None)
    reject_non_prices(batch)
    return batch


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    if value is pd.NaT:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()  # type: ignore[union-attr]
    return str(value)
