"""The sequences stage: per ticker, scaled sliding windows as Parquet files.

For each ticker, the closes up to the as-of date become windows of
``window`` closes and the close that follows. The newest
``validation_fraction`` of the windows validate; the scaler is fitted on the
closes of the training windows only (inputs and targets), so it never sees a
close it will be evaluated on. Each ticker's windows are written to
``<home>/sequences/<TICKER>.parquet`` and recorded, with the fitted scaler,
in the ``sequence_files`` table. What a file holds, and how reading it checks it,
is ``pipeline.sequences.files``.

A file whose content would not change is not rewritten, so a rerun leaves
files byte for byte and time stamp as they were.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from pipeline.files import remove_leftover_temporaries
from pipeline.results import SequencesSummary
from pipeline.sequences import handoff
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.files import (
    read_sequence_windows,
    sequence_file_bytes,
    stored_table,
    write_sequence_file,
)
from pipeline.sequences.windows import TickerWindows

logger = logging.getLogger(__name__)

SEQUENCES_DIR = "sequences"
#: Tickers built at once (the work is NumPy and Parquet, which run outside the GIL).
BUILD_THREADS = min(4, os.cpu_count() or 1)


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


def build_sequences(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    config: SequenceConfig | None = None,
    hand_off: bool = False,
) -> SequenceResult:
    """Build each ticker's scaled windows from the prices up to ``as_of``.

    A ticker whose recorded file (``sequence_files``) is still the bytes recorded, was
    built with this window and price field through a date on or before ``as_of``, and
    whose closes in that span have not changed since (``price_revisions``, kept by
    triggers on ``prices``) keeps the file's closes: only its closes after the file's
    ``data_through`` are read from the database. Every other ticker's closes are read
    whole. Either way the file and row are those a build from every close gives.

    With ``hand_off``, each written file's windows (exactly what the file reads back as)
    are kept in this process for the train stage's ``read_sequences`` to take instead of
    decoding the file (``pipeline.sequences.handoff``); a ticker whose file and row are
    kept as they were (nothing new) is read from its file. Every call drops the windows
    an earlier one kept.

    Args:
        conn: an open connection; the caller owns the transaction.
        home: the pricecast home folder; files go to ``<home>/sequences``.
        as_of: the last date whose close may be used.
        tickers: tickers to build; ``None`` builds every active ticker with prices.
        config: price field, window, scaling and validation share.
        hand_off: keep the windows written for a ``read_sequences`` in this process
            (the daily run's train stage, next).

    Returns:
        The ``sequence_files`` rows written, and the tickers skipped with why.

    Raises:
        MissingDataError: no requested ticker has any price up to ``as_of``.
    """
    config = config or SequenceConfig()
    handoff.clear()
    inactive = inactive_tickers(conn)
    skipped: dict[str, str] = {
        ticker: "inactive; `pricecast tickers add` reactivates it"
        for ticker in sorted(set(tickers or []) & inactive)
    }
    wanted = None if tickers is None else [ticker for ticker in tickers if ticker not in inactive]
    previous = _previous_files(conn, as_of, wanted, inactive, config)
    after = read_closes_after_files(conn, as_of) if previous else None
    new_rows = {ticker: rows for ticker, rows in after.runs()} if after is not None else {}

    def write(
        ticker: str, dates: np.ndarray, values: np.ndarray
    ) -> tuple[dict[str, Any], TickerWindows | None]:
        """Write the ticker's file; its row, and with ``hand_off`` its windows."""
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
        row = {
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
        if not hand_off:
            return row, None
        # What ``read_sequence_windows`` makes of the file: the closes it was encoded
        # from (a copy: not a view of every ticker's closes) and its windows' dates.
        windows = TickerWindows(
            closes=np.array(values, dtype=float),
            target_dates=as_days(dates[config.window :]),
            n_train=description["train_windows"],
            window=config.window,
        )
        return row, windows

    def update(row: dict[str, Any]) -> tuple[dict[str, Any], TickerWindows | None] | None:
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
                return {key: row[key] for key in _ROW_KEYS}, None
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
        updated = in_threads(pool, update, [(row,) for row in previous.values()])
        built = {row[c.TICKER]: (row, windows) for row, windows in filter(None, updated)}
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
        written = [*built.values(), *in_threads(pool, write, series)]
    rows = sorted([row for row, _ in written], key=lambda row: row[c.TICKER])
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
    if hand_off:
        handoff.keep(
            {
                (row["file_path"], row["sha256"]): windows
                for row, windows in written
                if windows is not None
            }
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


def in_threads(pool: ThreadPoolExecutor, call: Any, items: Sequence[Any]) -> list[Any]:
    """``call(*item)`` for each item on ``pool``, each in a copy of this thread's context
    (so log records keep the caller's: a Prefect flow run's handler needs it); the
    results in the order of ``items``."""
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
