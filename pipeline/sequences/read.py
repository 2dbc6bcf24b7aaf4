"""Reading the sequences a stage consumes: the files built as of a date, checked and read.

The train stage reads every ticker's windows through ``read_sequences``: the
``sequence_files`` rows built as of the as-of date (active tickers, the
windowing asked for), each file read and checked against its recorded digest.
A file that is missing or damaged is reported and rebuilt from the prices in the
database, as the sequences stage builds it (``build.build_sequences``), then read.

In the daily run the sequences stage has just built the files in this process and
kept their windows (``handoff``): a row whose file and digest are those of kept
windows takes them, once the file is found to still hold those bytes, instead of
decoding the file. The files are read on threads, as they are built.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.sequences import read_sequence_files
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import MissingDataError
from pipeline.sequences import handoff
from pipeline.sequences.build import BUILD_THREADS, build_sequences, in_threads
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.files import read_sequence_windows, sequence_file_bytes
from pipeline.sequences.windows import TickerWindows

logger = logging.getLogger(__name__)

#: Files read at once (as many as the sequences stage builds at once).
READ_THREADS = BUILD_THREADS


@dataclass(frozen=True)
class SequenceFiles:
    """The sequence files of a set of tickers: their ``sequence_files`` rows and their
    windows (``TickerWindows``: the closes they are made of, not the files' frames)."""

    rows: list[dict[str, Any]]
    windows: dict[str, TickerWindows]

    @property
    def tickers(self) -> list[str]:
        return [row[c.TICKER] for row in self.rows]


def read_sequences(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None,
    config: SequenceConfig,
) -> SequenceFiles:
    """The sequence files built as of ``as_of``, read (see ``sequence_rows``).

    A file that is missing, or is not the bytes ``sequence_files`` recorded (another
    ticker's copied over it, a truncated copy), is reported and rebuilt from the
    prices in the database, as the sequences stage builds it, then read.

    The windows a ``build_sequences(..., hand_off=True)`` of this process kept for a
    row's file and digest are taken instead of decoding the file (``handoff``); this
    read takes everything kept, so nothing is kept after it.

    Raises:
        MissingDataError: no sequences were built as of ``as_of`` (for a ticker asked
            for), or they were built with another windowing than ``config``.
    """
    rows = sequence_rows(conn, as_of, tickers, config)
    windows: dict[str, TickerWindows] = {}
    damaged: list[str] = []
    for row, read in zip(rows, _read_all(rows, config, handoff.take()), strict=True):
        if isinstance(read, MissingDataError):
            logger.warning("%s; rebuilding it from the database", read)
            damaged.append(row[c.TICKER])
        else:
            windows[row[c.TICKER]] = read
    if damaged:
        build_sequences(conn, home, as_of, damaged, config, hand_off=True)
        rows = sequence_rows(conn, as_of, tickers, config)
        rebuilt = [row for row in rows if row[c.TICKER] in damaged]
        for row, read in zip(rebuilt, _read_all(rebuilt, config, handoff.take()), strict=True):
            if isinstance(read, MissingDataError):
                raise read
            windows[row[c.TICKER]] = read
    return SequenceFiles(rows=rows, windows=windows)


def _read_all(
    rows: list[dict[str, Any]],
    config: SequenceConfig,
    handed: dict[handoff.FileKey, TickerWindows],
) -> list[TickerWindows | MissingDataError]:
    """Each row's windows, or why its file cannot be read, in the order of ``rows``:
    those ``handed`` for its file and digest, else the file's (``read_sequence_windows``).
    On threads, as the sequences stage builds them: reading is Parquet decoding,
    hashing and NumPy, which release the GIL (``benchmarks/sequence_reads.py``)."""
    items = [(row, config, handed.pop((row["file_path"], row["sha256"]), None)) for row in rows]
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return in_threads(pool, _read_or_error, items)


def _read_or_error(
    row: dict[str, Any], config: SequenceConfig, handed: TickerWindows | None
) -> TickerWindows | MissingDataError:
    path, sha256 = Path(row["file_path"]), row["sha256"]
    try:
        if handed is None:
            return read_sequence_windows(path, sha256, config.window)
        # The file must still hold the bytes the windows were handed for: a file changed
        # since is reported and rebuilt, as one read from disk is.
        sequence_file_bytes(path, sha256)
        return handed
    except MissingDataError as exc:
        return exc


def sequence_rows(
    conn: Connection,
    as_of: dt.date,
    tickers: Sequence[str] | None,
    config: SequenceConfig,
) -> list[dict[str, Any]]:
    """The ``sequence_files`` rows built as of ``as_of`` for ``tickers`` (``None``: every
    active ticker), checked to be built with ``config``'s windowing.

    Raises:
        MissingDataError: as ``read_sequences``.
    """
    rows = read_sequence_files(conn, as_of, tickers)
    if tickers is None:
        inactive = inactive_tickers(conn)
        rows = [row for row in rows if row[c.TICKER] not in inactive]
    found = {row[c.TICKER] for row in rows}
    missing = sorted(set(tickers or []) - found)
    if missing or not rows:
        which = ", ".join(missing) if missing else "any ticker"
        raise MissingDataError(
            f"no sequences built as of {as_of} for {which}; run `pricecast sequences "
            f"--as-of {as_of}` first"
        )
    for row in rows:
        built = {
            key: row[key] for key in ("window", "scaling", "validation_fraction", "price_field")
        }
        if built != {key: getattr(config, key) for key in built}:
            raise MissingDataError(
                f"sequences of {row[c.TICKER]} as of {as_of} were built with {built}, "
                f"not {config.to_dict()}; rebuild them with `pricecast sequences`"
            )
    return rows
