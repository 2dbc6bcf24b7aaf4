"""The sequence file format: what a ticker's ``<home>/sequences/<TICKER>.parquet`` holds
and how reading it checks it.

A file holds one ticker's windows of ``window`` closes and the close that follows
each: the ticker, each window's target date and split (training or validation),
its oldest close and its target close (all the inputs for a ticker of fewer
windows than ``window``), with the window, the scaling and the scaler fitted on
the training windows' closes in the schema's metadata (``FORMAT_KEY``,
``stored_table``). Reading a file computes the scaled inputs and target and the
other raw inputs from these (``expand_table``), to the columns of
``sequence_schema``; a file without that metadata (every column, as files were
written before) is read as it is. ``windows_table``, ``windows_frame`` and
``ticker_windows`` give a ticker's windows as its file would read back, without
writing one (backtests train on ``ticker_windows``).

Reading checks a file: it must exist and, given the SHA-256 its ``sequence_files``
row recorded, still hold those bytes (``sequence_file_bytes``). Read whole
(``read_sequence_file``), its format must be ``FILE_FORMAT`` and its columns those
of a sequence file; read as the closes training keeps (``read_sequence_windows``),
each target must be the oldest close of the window ``window`` rows later. A file
that fails raises ``MissingDataError`` saying to rebuild it with
``pricecast sequences``. A file whose bytes would not change is not rewritten
(``write_sequence_file``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import columns as c
from pipeline.days import as_days
from pipeline.errors import MissingDataError
from pipeline.files import sha256_bytes, sha256_file, write_atomically
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.scaling import get_scaler
from pipeline.sequences.windows import (
    TickerWindows,
    build_windows,
    split_codes,
    split_counts,
    training_count,
)

#: The key of a sequence file's schema metadata that says how its columns were made.
FORMAT_KEY = "pricecast.sequences"
#: Files of the stored columns only (``stored_table``); files of every column have no key.
FILE_FORMAT = 2


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
    # The text columns as repeats of one value: a list of ``count`` strings took four
    # times as long as taking from a one-value array (0.2 ms a ten-year ticker for each
    # column), which took four times as long as a repeat (81 against 14 us).
    columns: dict[str, pa.Array] = {
        c.TICKER: pa.repeat(pa.scalar(ticker, pa.string()), count),
        c.TARGET_DATE: pa.array(days[window:], pa.date32()),
        c.SPLIT: pa.concat_arrays(
            [
                pa.repeat(pa.scalar(c.SPLIT_TRAIN, pa.string()), n_train),
                pa.repeat(pa.scalar(c.SPLIT_VALIDATION, pa.string()), n_validation),
            ]
        ),
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


@functools.lru_cache(maxsize=8)
def sequence_schema(window: int) -> pa.Schema:
    """The Arrow schema of a sequence file with windows of ``window`` closes (one object
    per window: a schema is immutable, and building it is a fifth of ``stored_table``)."""
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
        # The split read as its dictionary (the file stores it so): each window's label
        # as a code, not a Python string, and the file opened once whatever its length
        # (``metadata.num_rows``). A ten-year file: 1.7 ms before, as strings and maybe
        # read twice.
        source = pq.ParquetFile(
            pa.BufferReader(payload), pre_buffer=False, read_dictionary=[c.SPLIT]
        )
        given = inputs if source.metadata.num_rows < window else inputs[:1]
        table = source.read(
            columns=[*given, c.TARGET_CLOSE, c.TARGET_DATE, c.SPLIT], use_threads=False
        )
        return TickerWindows.from_training_count(
            np.column_stack([table[name].to_numpy() for name in given])
            if table.num_rows
            else np.empty((0, len(given))),
            table[c.TARGET_CLOSE].to_numpy(),
            table[c.TARGET_DATE].to_numpy(),
            _training_count(table[c.SPLIT], "its columns"),
            window,
            where="its columns",
        )
    except (ValueError, KeyError, pa.ArrowException) as exc:
        raise MissingDataError(
            f"sequence file {path} cannot be read as windows of {window} closes "
            f"({str(exc).splitlines()[0]}); "
            "rebuild it with `pricecast sequences`"
        ) from exc


def _training_count(split: pa.ChunkedArray, where: str) -> int:
    """How many windows train (``windows.training_count``), from a split column read as
    a dictionary: each chunk's few labels coded once, then its indices.

    Raises:
        ValueError: a window has no split, or the split is not the training windows then
            the validation ones.
    """
    codes = []
    for chunk in split.chunks:
        if chunk.null_count:
            raise ValueError(f"{where}: a window has no split")
        recode = split_codes(np.array(chunk.dictionary.to_pylist(), dtype=object))
        codes.append(recode[chunk.indices.to_numpy()] if len(recode) else np.empty(0, int))
    return training_count(np.concatenate(codes) if codes else np.empty(0, int), where)


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
