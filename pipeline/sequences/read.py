"""Reading the sequences a stage consumes: the files built as of a date, checked and read.

The train stage reads every ticker's windows through ``read_sequences``: the
``sequence_files`` rows built as of the as-of date (active tickers, the
windowing asked for), each file read and checked against its recorded digest.
A file that is missing or damaged is reported and rebuilt from the prices in the
database, as the sequences stage builds it (``build.build_sequences``), then read.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.sequences import read_sequence_files
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import MissingDataError
from pipeline.sequences.build import build_sequences
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.files import read_sequence_windows
from pipeline.sequences.windows import TickerWindows

logger = logging.getLogger(__name__)


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

    Raises:
        MissingDataError: no sequences were built as of ``as_of`` (for a ticker asked
            for), or they were built with another windowing than ``config``.
    """
    rows = sequence_rows(conn, as_of, tickers, config)
    windows: dict[str, TickerWindows] = {}
    damaged: list[str] = []
    for row in rows:
        try:
            windows[row[c.TICKER]] = _read(row, config)
        except MissingDataError as exc:
            logger.warning("%s; rebuilding it from the database", exc)
            damaged.append(row[c.TICKER])
    if damaged:
        build_sequences(conn, home, as_of, damaged, config)
        rows = sequence_rows(conn, as_of, tickers, config)
        windows.update(
            {row[c.TICKER]: _read(row, config) for row in rows if row[c.TICKER] in damaged}
        )
    return SequenceFiles(rows=rows, windows=windows)


def _read(row: dict[str, Any], config: SequenceConfig) -> TickerWindows:
    return read_sequence_windows(Path(row["file_path"]), row["sha256"], config.window)


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
