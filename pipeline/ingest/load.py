"""The ingest stage: price files into the ``prices`` table, by upsert."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.prices import upsert_prices
from pipeline.ingest.readers import expand_sources, read_price_file

logger = logging.getLogger(__name__)


@dataclass
class FileReport:
    """What one file contributed."""

    path: str
    rows_read: int
    rows_loaded: int
    rows_after_as_of: int
    rows_other_tickers: int
    tickers: list[str]


@dataclass
class IngestReport:
    """What one ingest run did; every row read is loaded or counted as set aside."""

    files: list[FileReport] = field(default_factory=list)

    def _total(self, name: str) -> int:
        return sum(getattr(report, name) for report in self.files)

    @property
    def rows_read(self) -> int:
        return self._total("rows_read")

    @property
    def rows_loaded(self) -> int:
        return self._total("rows_loaded")

    @property
    def rows_after_as_of(self) -> int:
        return self._total("rows_after_as_of")

    @property
    def rows_other_tickers(self) -> int:
        return self._total("rows_other_tickers")

    @property
    def tickers(self) -> list[str]:
        return sorted({ticker for report in self.files for ticker in report.tickers})

    def summary(self) -> dict[str, object]:
        """Counts for logs and flow results."""
        return {
            "files": len(self.files),
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_after_as_of": self.rows_after_as_of,
            "rows_other_tickers": self.rows_other_tickers,
            "tickers": self.tickers,
        }


def ingest_paths(
    conn: Connection,
    paths: Iterable[Path | str],
    *,
    as_of: dt.date | None = None,
    tickers: Sequence[str] | None = None,
) -> IngestReport:
    """Upsert the prices in ``paths`` into ``prices``.

    Files are read in the order given (a folder's files by name); when two
    files hold the same ``(ticker, trade_date)``, the later one wins. Rows
    dated after ``as_of`` are not loaded: a run as of that date must not see
    them, and the run for their date loads them. Rows of tickers outside
    ``tickers`` (when given) are skipped.

    Args:
        conn: an open connection; the caller owns the transaction.
        paths: files or folders (see ``readers``).
        as_of: the as-of date; ``None`` loads every date.
        tickers: tickers to load; ``None`` loads all.

    Raises:
        InputFileError: a path is missing or a file cannot be read (see ``readers``).
    """
    files = expand_sources(paths)
    frames = [(path, read_price_file(path)) for path in files]
    wanted = {ticker.upper() for ticker in tickers} if tickers else None
    report = IngestReport()
    for path, frame in frames:
        rows_read = len(frame)
        other = pd.Series(False, index=frame.index)
        if wanted is not None:
            other = ~frame[c.TICKER].isin(wanted)
        late = pd.Series(False, index=frame.index)
        if as_of is not None:
            late = frame[c.TRADE_DATE] > pd.Timestamp(as_of)
            late &= ~other
        keep = frame.loc[~(other | late)]
        loaded = upsert_prices(conn, keep)
        file_report = FileReport(
            path=str(path),
            rows_read=rows_read,
            rows_loaded=loaded,
            rows_after_as_of=int(late.sum()),
            rows_other_tickers=int(other.sum()),
            tickers=sorted(keep[c.TICKER].unique()),
        )
        logger.info(
            "ingested %s: %d rows read, %d loaded, %d after the as-of date, %d of other tickers",
            path,
            file_report.rows_read,
            file_report.rows_loaded,
            file_report.rows_after_as_of,
            file_report.rows_other_tickers,
        )
        report.files.append(file_report)
    return report
