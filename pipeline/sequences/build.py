"""The sequences stage: per ticker, scaled sliding windows as Parquet files.

For each ticker, the closes up to the as-of date become windows of
``window`` closes and the close that follows. The newest
``validation_fraction`` of the windows validate; the scaler is fitted on the
closes of the training windows only (inputs and targets), so it never sees a
close it will be evaluated on. Each ticker's windows are written to
``<home>/sequences/<TICKER>.parquet`` and recorded, with the fitted scaler,
in the ``sequence_files`` table.

A file whose content would not change is not rewritten, so a rerun leaves
files byte for byte and time stamp as they were.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.prices import read_closes
from pipeline.db.sequences import upsert_sequence_files
from pipeline.db.tickers import inactive_tickers
from pipeline.errors import MissingDataError
from pipeline.files import sha256_bytes, sha256_file, write_atomically
from pipeline.sequences.config import SequenceConfig
from pipeline.sequences.scaling import get_scaler
from pipeline.sequences.windows import build_windows, split_counts

logger = logging.getLogger(__name__)

SEQUENCES_DIR = "sequences"


@dataclass(frozen=True)
class SequenceResult:
    """What the sequences stage built."""

    as_of: dt.date
    files: list[dict[str, Any]]
    skipped: dict[str, str]

    @property
    def tickers(self) -> list[str]:
        return [row[c.TICKER] for row in self.files]

    def summary(self) -> dict[str, object]:
        """Counts for logs and flow results."""
        return {
            "as_of": self.as_of.isoformat(),
            "tickers": self.tickers,
            "train_windows": sum(row["train_windows"] for row in self.files),
            "validation_windows": sum(row["validation_windows"] for row in self.files),
            "skipped": self.skipped,
        }


def sequence_path(home: Path, ticker: str) -> Path:
    """Where a ticker's sequence file lives."""
    return home / SEQUENCES_DIR / f"{ticker}.parquet"


def minimum_closes(config: SequenceConfig) -> int:
    """Closes a ticker needs: one window plus a training and a validation target."""
    return config.window + 2


def windows_frame(
    ticker: str, dates: Sequence[dt.date], closes: np.ndarray, config: SequenceConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One ticker's windows, scaled and raw, and the description of how they were made.

    Returns:
        The frame written to Parquet (``ticker``, ``target_date``, ``split``,
        the scaled inputs ``x0`` .. ``x{window-1}`` and target ``y``, the raw
        inputs ``p0`` .. ``p{window-1}`` and target ``target_close``) and a
        dictionary with the fitted scaler, the span it saw, and the window counts.
    """
    scaler = get_scaler(config.scaling)
    count = len(closes) - config.window
    n_train, n_validation = split_counts(count, config.validation_fraction)
    fitted_closes = n_train + config.window  # every close a training window touches
    params = scaler.fit(closes[:fitted_closes])
    raw_x, raw_y = build_windows(closes, config.window)
    frame = pd.DataFrame(scaler.encode(raw_x, params), columns=c.window_columns(config.window))
    frame.insert(0, c.TICKER, ticker)
    frame.insert(1, c.TARGET_DATE, list(dates[config.window :]))
    frame.insert(2, c.SPLIT, [c.SPLIT_TRAIN] * n_train + [c.SPLIT_VALIDATION] * n_validation)
    frame[c.TARGET] = scaler.encode_target(raw_y, raw_x, params)
    for index, name in enumerate(c.raw_window_columns(config.window)):
        frame[name] = raw_x[:, index]
    frame[c.TARGET_CLOSE] = raw_y
    description = {
        "scaler_params": params,
        "fit_start": dates[0],
        "fit_end": dates[fitted_closes - 1],
        "train_windows": n_train,
        "validation_windows": n_validation,
    }
    return frame, description


def _arrow_table(frame: pd.DataFrame, window: int) -> pa.Table:
    fields = [
        pa.field(c.TICKER, pa.string()),
        pa.field(c.TARGET_DATE, pa.date32()),
        pa.field(c.SPLIT, pa.string()),
        *[pa.field(name, pa.float64()) for name in c.window_columns(window)],
        pa.field(c.TARGET, pa.float64()),
        *[pa.field(name, pa.float64()) for name in c.raw_window_columns(window)],
        pa.field(c.TARGET_CLOSE, pa.float64()),
    ]
    arrays = [
        pa.array(frame[field.name].to_numpy(dtype=float), type=field.type)
        if field.type == pa.float64()
        else pa.array(frame[field.name].tolist(), type=field.type)
        for field in fields
    ]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_sequence_file(path: Path, frame: pd.DataFrame, window: int) -> str:
    """Write ``frame`` to ``path`` unless the file already holds exactly these bytes.

    Returns:
        The SHA-256 of the file.
    """
    table = _arrow_table(frame, window)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    payload = sink.getvalue().to_pybytes()
    digest = sha256_bytes(payload)
    if path.exists() and sha256_file(path) == digest:
        return digest
    write_atomically(path, lambda temporary: temporary.write_bytes(payload))
    return digest


def read_sequence_file(path: Path) -> pd.DataFrame:
    """A sequence file as written by ``write_sequence_file``.

    Raises:
        MissingDataError: the file does not exist.
    """
    if not path.exists():
        raise MissingDataError(
            f"sequence file {path} is missing; rebuild it with `pricecast sequences`"
        )
    return pq.read_table(path).to_pandas()


def build_sequences(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    config: SequenceConfig | None = None,
) -> SequenceResult:
    """Build each ticker's scaled windows from the prices up to ``as_of``.

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
    closes = read_closes(conn, as_of, tickers, field=config.price_field)
    closes = closes[~closes[c.TICKER].isin(inactive)]
    found = set(closes[c.TICKER].unique())
    if not found:
        wanted = ", ".join(tickers) if tickers else "any active ticker"
        raise MissingDataError(f"no prices for {wanted} on or before {as_of}; ingest prices first")
    for ticker in sorted(set(tickers or []) - found - set(skipped)):
        skipped[ticker] = f"no prices on or before {as_of}"
    rows: list[dict[str, Any]] = []
    needed = minimum_closes(config)
    for ticker, group in closes.groupby(c.TICKER, sort=True):
        if len(group) < needed:
            skipped[str(ticker)] = f"{len(group)} closes on or before {as_of}; needs {needed}"
            logger.warning("skipping %s: %s", ticker, skipped[str(ticker)])
            continue
        dates = list(group[c.TRADE_DATE])
        frame, description = windows_frame(
            str(ticker), dates, group[c.CLOSE].to_numpy(dtype=float), config
        )
        path = sequence_path(home, str(ticker))
        digest = write_sequence_file(path, frame, config.window)
        rows.append(
            {
                c.TICKER: str(ticker),
                c.AS_OF_DATE: as_of,
                "data_through": dates[-1],
                "window": config.window,
                "scaling": config.scaling,
                "validation_fraction": config.validation_fraction,
                "price_field": config.price_field,
                "file_path": str(path),
                "sha256": digest,
                **description,
            }
        )
        logger.info(
            "sequences for %s: %d training and %d validation windows through %s",
            ticker,
            description["train_windows"],
            description["validation_windows"],
            dates[-1],
        )
    upsert_sequence_files(conn, rows)
    return SequenceResult(as_of=as_of, files=rows, skipped=skipped)
