"""The sequences stage: per ticker, scaled sliding windows as Parquet files.

For each ticker, the closes up to the as-of date become windows of
``window`` closes and the close that follows. The newest
``validation_fraction`` of the windows validate; the scaler is fitted on the
closes of the training windows only (inputs and targets), so it never sees a
close it will be evaluated on. Each ticker's windows are written to
``<home>/sequences/<TICKER>.parquet`` and recorded, with the fitted scaler,
in the ``sequence_files`` table. A file stores the closes (each window's first close
and its target) with the date and split of each window, and the scaler in its
metadata; reading it computes the scaled and the other raw columns
(``stored_table``, ``expand_table``).

A file whose content would not change is not rewritten, so a rerun leaves
files byte for byte and time stamp as they were.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.days import as_days
from pipeline.db.prices import read_close_arrays, read_closes_after_files, tickers_with_prices
from pipeline.db.sequences import (
    clear_price_revisions,
    current_sequence_files,
    price_revisions_of,
    revision_triggers_present,
    upsert_sequence_files,
)
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import MissingDataError
from pipeline.files import (
    remove_leftover_temporaries,
    sha256_bytes,
    sha256_file,
    write_atomically,
)
from pipeline.results import SequencesSummary
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.scaling import get_scaler
from pipeline.sequences.windows import TickerWindows, build_windows, split_counts

logger = logging.getLogger(__name__)

SEQUENCES_DIR = "sequences"
#: Tickers built at once (the work is NumPy and Parquet, which run outside the GIL).
BUILD_THREADS = min(4, os.cpu_count() or 1)
#: The key of a sequence file's schema metadata that says how its columns were made.
FORMAT_KEY = "pricecast.sequences"
#: Files of the stored columns only (``stored_table``); files of every column have no key.
FILE_FORMAT = 2


@dataclass(frozen=True)
class SequenceResult:
    """What the sequences stage built."""

    as_of: dt.date
    files: list[dict[str, Any]]
    skipped: dict[str, str]

    @property
    def tickers(self) -> list[str]:
        return [row[c.TICKER] for row in self.files]

    def summary(self) -> SequencesSummary:
        """Counts for logs and flow results."""
        return SequencesSummary(
            as_of=self.as_of,
            tickers=self.tickers,
            train_windows=sum(row["train_windows"] for row in self.files),
            validation_windows=sum(row["validation_windows"] for row in self.files),
            skipped=self.skipped,
        )


def sequence_path(home: Path, ticker: str) -> Path:
    """Where a ticker's sequence file lives."""
    return home / SEQUENCES_DIR / f"{ticker}.parquet"


def minimum_closes(config: SequenceConfig) -> int:
    """Closes a ticker needs: one window plus a training and a validation target."""
    return config.window + 2


def windows_table(
    ticker: str, dates: Sequence[dt.date] | np.ndarray, closes: np.ndarray, config: SequenceConfig
) -> tuple[pa.Table, dict[str, Any]]:
    """One ticker's windows, scaled and raw, and the description of how they were made.

    Args:
        ticker: the ticker.
        dates: the date of each close, oldest first (``datetime.date`` or ``datetime64``).
        closes: the closes, oldest first.
        config: window, scaling and validation share.

    Returns:
        The table a sequence file reads back as (``ticker``, ``target_date``, ``split``,
        the scaled inputs ``x0`` .. ``x{window-1}`` and target ``y``, the raw
        inputs ``p0`` .. ``p{window-1}`` and target ``target_close``; the file stores
        only what the rest is computed from, ``stored_table``) and a dictionary with
        the fitted scaler, the span it saw, and the window counts.
    """
    stored, description = stored_table(ticker, dates, closes, config)
    return expand_table(stored, closes=np.asarray(closes, dtype=float)), description


def stored_table(
    ticker: str, dates: Sequence[dt.date] | np.ndarray, closes: np.ndarray, config: SequenceConfig
) -> tuple[pa.Table, dict[str, Any]]:
    """What a sequence file stores of ``windows_table``: ``ticker``, ``target_date``,
    ``split``, each window's oldest close ``p0`` and its target ``target_close`` (every
    close of the ticker; all the raw inputs for a ticker of fewer windows than
    ``window``), with the window, the scaling and the fitted scaler's parameters in the
    schema's metadata. The scaled inputs and target, and the other raw inputs, are
    computed from these when the file is read (``expand_table``): they were 19 of the
    24 columns, nine tenths of the bytes and four fifths of the time to encode a file
    (a ten-year ticker: 354 KB in 4.1 ms with every column, 34 KB in 0.8 ms with these;
    the sequences folder of 1,000 such tickers 340 MB, now 36 MB).
    """
    window = config.window
    days = as_days(dates)
    closes = np.asarray(closes, dtype=float)
    count = len(closes) - window
    description = _describe(days, closes, config)
    n_train, n_validation = description["train_windows"], description["validation_windows"]
    stored = _stored_columns(window, count)
    # The text columns taken from one-value arrays: a list of ``count`` strings took
    # four times as long (0.2 ms a ten-year ticker for each column).
    split = np.repeat(np.array([0, 1], dtype=np.int32), [n_train, n_validation])
    columns: dict[str, pa.Array] = {
        c.TICKER: pa.array([ticker], pa.string()).take(np.zeros(count, dtype=np.int32)),
        c.TARGET_DATE: pa.array(days[window:], pa.date32()),
        c.SPLIT: pa.array([c.SPLIT_TRAIN, c.SPLIT_VALIDATION], pa.string()).take(split),
    }
    for index, name in enumerate(c.raw_window_columns(window)):
        if name in stored:
            columns[name] = pa.array(closes[index : index + count])
    columns[c.TARGET_CLOSE] = pa.array(closes[window:])
    metadata = {
        FORMAT_KEY: json.dumps(
            {
                "format": FILE_FORMAT,
                "window": window,
                "scaling": config.scaling,
                "scaler_params": description["scaler_params"],
            },
            sort_keys=True,
        )
    }
    schema = sequence_schema(window)
    schema = pa.schema([schema.field(name) for name in columns], metadata=metadata)
    return pa.Table.from_pydict(columns, schema=schema), description


def _stored_columns(window: int, count: int) -> list[str]:
    """The columns a sequence file of ``count`` windows of ``window`` closes stores."""
    inputs = c.raw_window_columns(window)
    kept = inputs if count < window else inputs[:1]
    return [c.TICKER, c.TARGET_DATE, c.SPLIT, *kept, c.TARGET_CLOSE]


def expand_table(stored: pa.Table, closes: np.ndarray | None = None) -> pa.Table:
    """A sequence file's table with every column of ``sequence_schema``: the stored
    columns of a file as ``stored_table`` writes it, and the others computed from them
    and its metadata as ``windows_table`` computed them; a table without that metadata
    (a file of every column, as files were written before) as it is.

    Raises:
        ValueError: the metadata or the columns are not those of a sequence file.
    """
    metadata = stored.schema.metadata or {}
    if FORMAT_KEY.encode() not in metadata:
        return stored
    made = json.loads(metadata[FORMAT_KEY.encode()])
    if made.get("format") != FILE_FORMAT:
        raise ValueError(f"sequence file format {made.get('format')!r} is not {FILE_FORMAT}")
    window, params = int(made["window"]), made["scaler_params"]
    scaler = get_scaler(made["scaling"])
    count = stored.num_rows
    if closes is None:
        targets = stored[c.TARGET_CLOSE].to_numpy()
        if count < window:
            first = [stored[name][0].as_py() for name in c.raw_window_columns(window)]
            closes = np.r_[np.asarray(first, dtype=float), targets]
        else:
            closes = np.r_[stored[c.raw_window_columns(window)[0]].to_numpy(), targets[-window:]]
    raw_x, raw_y = build_windows(closes, window)
    # Column-major copies: Arrow takes each column without another copy.
    scaled_x = np.asfortranarray(scaler.encode(raw_x, params))
    raw_x = np.asfortranarray(raw_x)
    columns: dict[str, pa.Array] = {
        name: stored[name] for name in (c.TICKER, c.TARGET_DATE, c.SPLIT)
    }
    for index, name in enumerate(c.window_columns(window)):
        columns[name] = pa.array(scaled_x[:, index])
    columns[c.TARGET] = pa.array(scaler.encode_target(raw_y, raw_x, params))
    for index, name in enumerate(c.raw_window_columns(window)):
        columns[name] = pa.array(raw_x[:, index])
    columns[c.TARGET_CLOSE] = pa.array(raw_y)
    schema = sequence_schema(window).with_metadata(metadata)
    return pa.Table.from_pydict(columns, schema=schema)


def ticker_windows(
    dates: Sequence[dt.date] | np.ndarray, closes: np.ndarray, config: SequenceConfig
) -> tuple[TickerWindows, dict[str, Any]]:
    """One ticker's windows as training keeps them (``TickerWindows``) and the description
    ``windows_table`` gives them (the scaler fitted on the training windows' closes): the
    windows the sequences stage would write, without building a file's table (backtests
    train on these)."""
    days = as_days(dates)
    description = _describe(days, closes, config)
    windows = TickerWindows(
        closes=np.asarray(closes, dtype=float),
        target_dates=days[config.window :],
        n_train=description["train_windows"],
        window=config.window,
    )
    return windows, description


def _describe(days: np.ndarray, closes: np.ndarray, config: SequenceConfig) -> dict[str, Any]:
    """How a ticker's windows split, and its scaler fitted on every close a training
    window touches (never a validation target)."""
    n_train, n_validation = split_counts(len(closes) - config.window, config.validation_fraction)
    fitted_closes = n_train + config.window
    return {
        "scaler_params": get_scaler(config.scaling).fit(closes[:fitted_closes]),
        "fit_start": days[0].item(),
        "fit_end": days[fitted_closes - 1].item(),
        "train_windows": n_train,
        "validation_windows": n_validation,
    }


def windows_frame(
    ticker: str, dates: Sequence[dt.date] | np.ndarray, closes: np.ndarray, config: SequenceConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``windows_table`` as the frame ``read_sequence_file`` would return for its file."""
    table, description = windows_table(ticker, dates, closes, config)
    return table.to_pandas(), description


def sequence_schema(window: int) -> pa.Schema:
    """The Arrow schema of a sequence file with windows of ``window`` closes."""
    return pa.schema(
        [
            pa.field(c.TICKER, pa.string()),
            pa.field(c.TARGET_DATE, pa.date32()),
            pa.field(c.SPLIT, pa.string()),
            *[pa.field(name, pa.float64()) for name in c.window_columns(window)],
            pa.field(c.TARGET, pa.float64()),
            *[pa.field(name, pa.float64()) for name in c.raw_window_columns(window)],
            pa.field(c.TARGET_CLOSE, pa.float64()),
        ]
    )


def encode_sequence_file(table: pa.Table) -> bytes:
    """The Parquet bytes of a sequence file (the encoding ``write_sequence_file`` describes):
    of ``table``, the columns ``stored_table`` keeps (the others are computed on reading)."""
    metadata = table.schema.metadata or {}
    if FORMAT_KEY.encode() in metadata:
        window = json.loads(metadata[FORMAT_KEY.encode()])["window"]
        table = table.select(_stored_columns(window, table.num_rows))
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=1,
        use_dictionary=[c.TICKER, c.SPLIT],
        write_statistics=False,
    )
    return sink.getvalue().to_pybytes()


def write_sequence_file(path: Path, table: pa.Table) -> str:
    """Write ``table`` to ``path`` unless the file already holds exactly these bytes.

    Only the two text columns are dictionary-encoded: trying a dictionary on
    every float column made writing three times slower and the files larger.
    No column statistics: the files are always read whole, and leaving them out
    halved the time to encode a file (about 2.5 ms of 24 columns of 750 rows) and cut
    a third of the time to read it back, at the same size
    (``benchmarks/README.md``, ``incremental_day``). Only the columns ``stored_table``
    keeps are written: a ticker of ten years took 4.1 ms to encode into 354 KB with every
    column, 0.8 ms into 34 KB with five.

    Returns:
        The SHA-256 of the file.
    """
    payload = encode_sequence_file(table)
    digest = sha256_bytes(payload)
    # A file of another size holds other bytes: only one of the same size is read and
    # hashed (every file changes on a new day; reading 1,000 back took 0.4 s of CPU).
    if _size(path) == len(payload) and sha256_file(path) == digest:
        return digest
    write_atomically(path, lambda temporary: temporary.write_bytes(payload), "sequences")
    return digest


def _size(path: Path) -> int | None:
    """The file's size in bytes, or ``None`` when there is no file."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def read_sequence_file(path: Path, sha256: str | None = None) -> pd.DataFrame:
    """A sequence file as written by ``write_sequence_file``; with ``sha256`` (what
    ``sequence_files`` recorded), only if the file still has those bytes.

    Raises:
        MissingDataError: the file does not exist, or its bytes are not the ones
            recorded (``sequence_file_bytes``).
    """
    payload = sequence_file_bytes(path, sha256)
    try:
        table = expand_table(_parquet_table(payload))
    except (ValueError, KeyError, pa.ArrowException) as exc:
        raise MissingDataError(
            f"sequence file {path} cannot be read ({str(exc).splitlines()[0]}); "
            "rebuild it with `pricecast sequences`"
        ) from exc
    return table.to_pandas(use_threads=False)


def read_sequence_windows(path: Path, sha256: str | None, window: int) -> TickerWindows:
    """The windows of a sequence file in the form training keeps them (``TickerWindows``:
    the closes, about a thirtieth of the file as a data frame), read and checked as
    ``read_sequence_file`` reads it. Four of its columns are decoded (each window's
    oldest close, its target, date and split: every close, and a check that each
    target is the oldest close of the window ``window`` rows later), all the inputs
    only for a file of fewer windows than that.

    Raises:
        MissingDataError: as ``read_sequence_file``, or the file's windows are not
            windows of ``window`` closes of one series.
    """
    payload = sequence_file_bytes(path, sha256)
    inputs = c.raw_window_columns(window)
    try:
        table = _parquet_table(payload, [inputs[0], c.TARGET_CLOSE, c.TARGET_DATE, c.SPLIT])
        if table.num_rows < window:
            table = _parquet_table(payload, [*inputs, c.TARGET_CLOSE, c.TARGET_DATE, c.SPLIT])
            inputs_given = inputs
        else:
            inputs_given = inputs[:1]
        return TickerWindows.from_columns(
            np.column_stack([table[name].to_numpy() for name in inputs_given])
            if table.num_rows
            else np.empty((0, len(inputs_given))),
            table[c.TARGET_CLOSE].to_numpy(),
            table[c.TARGET_DATE].to_numpy(),
            table[c.SPLIT].to_numpy(zero_copy_only=False),
            window,
            where="its columns",
        )
    except (ValueError, KeyError, pa.ArrowException) as exc:
        raise MissingDataError(
            f"sequence file {path} cannot be read as windows of {window} closes "
            f"({str(exc).splitlines()[0]}); "
            "rebuild it with `pricecast sequences`"
        ) from exc


def sequence_file_bytes(path: Path, sha256: str | None = None) -> bytes:
    """A sequence file's bytes; with ``sha256``, only if they are the ones recorded.

    Raises:
        MissingDataError: the file does not exist, or its bytes are not the ones
            recorded (another ticker's file copied over it, a truncated copy): training
            on it would learn the wrong series under this ticker's name.
    """
    if not path.exists():
        raise MissingDataError(
            f"sequence file {path} is missing; rebuild it with `pricecast sequences`"
        )
    payload = path.read_bytes()
    if sha256 is not None and sha256_bytes(payload) != sha256:
        raise MissingDataError(
            f"sequence file {path} is not the file that was built (SHA-256 "
            f"{sha256_bytes(payload)[:12]}..., recorded {sha256[:12]}...): it was changed or "
            "replaced since; rebuild it with `pricecast sequences` (the daily run does)"
        )
    return payload


def _parquet_table(payload: bytes, columns: Sequence[str] | None = None) -> pa.Table:
    # A file is small (one ticker): without pre-buffering and threads, reading 1,000 of
    # them took a third less CPU (``benchmarks/README.md``, ``incremental_day``); and
    # through ``ParquetFile`` rather than ``read_table`` (the datasets layer), four columns
    # of a ten-year file took 0.76 ms instead of 1.88.
    return pq.ParquetFile(pa.BufferReader(payload), pre_buffer=False).read(
        columns=columns, use_threads=False
    )


def build_sequences(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    config: SequenceConfig | None = None,
) -> SequenceResult:
    """Build each ticker's scaled windows from the prices up to ``as_of``.

    A ticker whose recorded file (``sequence_files``) is still the bytes recorded, was
    built with this window and price field through a date on or before ``as_of``, and
    whose closes in that span have not changed since (``price_revisions``, kept by
    triggers on ``prices``) keeps the file's closes: only its closes after the file's
    ``data_through`` are read from the database. Every other ticker's closes are read
    whole. Either way the file and row are those a build from every close gives.

    Args:
        conn: an open connection; the caller owns the transaction.
        home: the pricecast home folder; files go to ``<home>/sequences``.
        as_of: the last date whose close may be used.
        tickers: tickers to build; ``None`` builds every active ticker with prices.
        config: price field, window, scaling and validation share.

    Returns:
        The ``sequence_files`` rows written, and the tickers skipped with why.

    Raises:
        MissingDataError: no requested ticker has any price up to ``as_of``.
    """
    config = config or SequenceConfig()
    inactive = inactive_tickers(conn)
    skipped: dict[str, str] = {
        ticker: "inactive; `pricecast tickers add` reactivates it"
        for ticker in sorted(set(tickers or []) & inactive)
    }
    wanted = None if tickers is None else [ticker for ticker in tickers if ticker not in inactive]
    previous = _previous_files(conn, as_of, wanted, inactive, config)
    after = read_closes_after_files(conn, as_of) if previous else None
    new_rows = {ticker: rows for ticker, rows in after.runs()} if after is not None else {}

    def write(ticker: str, dates: np.ndarray, values: np.ndarray) -> dict[str, Any]:
        table, description = stored_table(ticker, dates, values, config)
        path = sequence_path(home, ticker)
        digest = write_sequence_file(path, table)
        logger.debug(
            "sequences for %s: %d training and %d validation windows through %s",
            ticker,
            description["train_windows"],
            description["validation_windows"],
            dates[-1],
        )
        return {
            c.TICKER: ticker,
            c.AS_OF_DATE: as_of,
            "data_through": dates[-1].item(),
            "window": config.window,
            "scaling": config.scaling,
            "validation_fraction": config.validation_fraction,
            "price_field": config.price_field,
            "file_path": str(path),
            "sha256": digest,
            **description,
        }

    def update(row: dict[str, Any]) -> dict[str, Any] | None:
        """The ticker's file and row from its recorded file and the closes after it;
        ``None`` when the file is not the one recorded."""
        ticker = row[c.TICKER]
        rows = new_rows.get(ticker, slice(0, 0))
        path = sequence_path(home, ticker)
        if rows.stop == rows.start and _same_build(row, as_of, path, config):
            # Nothing new, built the same way into this file: the same bytes and row.
            try:
                sequence_file_bytes(path, row["sha256"])
            except MissingDataError:
                pass
            else:
                return {key: row[key] for key in _ROW_KEYS}
        try:
            windows = read_sequence_windows(Path(row["file_path"]), row["sha256"], config.window)
        except MissingDataError as exc:
            logger.info("%s; its closes are read from the database", exc)
            return None
        if not len(windows) or windows.target_dates[-1].item() != row["data_through"]:
            return None
        assert after is not None
        dates = np.concatenate(
            [
                np.array([row["fit_start"]], dtype="datetime64[D]"),
                # Not in the file, nor used: only the first date and each target's are.
                np.full(config.window - 1, np.datetime64("NaT"), dtype="datetime64[D]"),
                windows.target_dates,
                after.dates[rows],
            ]
        )
        return write(ticker, dates, np.concatenate([windows.closes, after.closes[rows]]))

    # A run killed while writing a file left its temporary beside it.
    remove_leftover_temporaries([sequence_path(home, ticker) for ticker in previous])
    # NumPy, Arrow and Parquet release the GIL: threads keep the cores busy. Each call
    # runs in a copy of this thread's context, so whatever the caller keeps there (a
    # Prefect flow run, which its log handler needs) holds for the logs of the threads.
    with ThreadPoolExecutor(max_workers=BUILD_THREADS) as pool:
        updated = _in_threads(pool, update, [(row,) for row in previous.values()])
        built = {row[c.TICKER]: row for row in updated if row is not None}
        everything = tickers_with_prices(conn) if tickers is None else wanted
        rest = [ticker for ticker in everything or [] if ticker not in built]
        runs: list[tuple[str, np.ndarray, np.ndarray]] = []
        if rest:
            whole = tickers is None and not built
            closes = read_close_arrays(
                conn, as_of, None if whole else rest, field=config.price_field
            )
            runs = [
                (ticker, closes.dates[rows], closes.closes[rows])
                for ticker, rows in closes.runs()
                if ticker not in inactive
            ]
        found = set(built) | {ticker for ticker, _, _ in runs}
        if not found:
            which = ", ".join(tickers) if tickers else "any active ticker"
            raise MissingDataError(
                f"no prices for {which} on or before {as_of}; ingest prices first"
            )
        for ticker in sorted(set(tickers or []) - found - set(skipped)):
            skipped[ticker] = f"no prices on or before {as_of}"
        needed = minimum_closes(config)
        series = []
        # Sorted: the database's collation may order tickers otherwise.
        for ticker, dates, values in sorted(runs, key=lambda item: item[0]):
            if len(values) < needed:
                skipped[ticker] = f"{len(values)} closes on or before {as_of}; needs {needed}"
                logger.warning("skipping %s: %s", ticker, skipped[ticker])
            else:
                series.append((ticker, dates, values))
        remove_leftover_temporaries([sequence_path(home, ticker) for ticker, _, _ in series])
        rows = _in_threads(pool, write, series)
    rows = sorted([*built.values(), *rows], key=lambda row: row[c.TICKER])
    upsert_sequence_files(conn, rows)
    # The files of these tickers were built from every close: their revisions are in them.
    clear_price_revisions(conn, [ticker for ticker, _, _ in series])
    logger.info(
        "sequences for %d tickers (%d from their files and the closes after them): "
        "%d training and %d validation windows as of %s; %d skipped",
        len(rows),
        len(built),
        sum(row["train_windows"] for row in rows),
        sum(row["validation_windows"] for row in rows),
        as_of,
        len(skipped),
    )
    return SequenceResult(as_of=as_of, files=rows, skipped=skipped)


#: The columns of a ``sequence_files`` row (``build_sequences`` gives them in this order).
_ROW_KEYS = (
    c.TICKER,
    c.AS_OF_DATE,
    "data_through",
    "window",
    "scaling",
    "validation_fraction",
    "price_field",
    "file_path",
    "sha256",
    "scaler_params",
    "fit_start",
    "fit_end",
    "train_windows",
    "validation_windows",
)


def _in_threads(pool: ThreadPoolExecutor, call: Any, items: Sequence[Any]) -> list[Any]:
    """``call(*item)`` for each item on ``pool``, each in a copy of this thread's context."""
    futures = [pool.submit(contextvars.copy_context().run, call, *item) for item in items]
    return [future.result() for future in futures]


def _same_build(row: dict[str, Any], as_of: dt.date, path: Path, config: SequenceConfig) -> bool:
    """Whether ``row`` records a build as of ``as_of`` into ``path`` with ``config``."""
    return (
        row[c.AS_OF_DATE] == as_of
        and row["file_path"] == str(path)
        and row["scaling"] == config.scaling
        and row["validation_fraction"] == config.validation_fraction
    )


def _previous_files(
    conn: Connection,
    as_of: dt.date,
    tickers: Sequence[str] | None,
    inactive: set[str],
    config: SequenceConfig,
) -> dict[str, dict[str, Any]]:
    """The recorded files whose closes may be kept (see ``build_sequences``), by ticker:
    built with this window and price field (``close``: which field an ``adj_close``
    series takes depends on every close) through a date on or before ``as_of``, with no
    close changed within their span since."""
    if config.price_field != c.CLOSE:
        return {}
    if not revision_triggers_present(conn):
        logger.warning(
            "the triggers that record changed closes are missing from the prices table; "
            "every ticker's closes are read (`pricecast` recreates them on a new database)"
        )
        return {}
    revised = price_revisions_of(conn)
    return {
        ticker: row
        for ticker, row in sorted(current_sequence_files(conn, tickers).items())
        if ticker not in inactive
        and ticker not in revised
        and row["window"] == config.window
        and row["price_field"] == config.price_field
        and row["data_through"] <= as_of
    }
