"""``TickerWindows``: a sequence file's windows kept as the closes they are made of."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import TINY_SEQUENCES, last_date, synthetic_prices
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.prices import upsert_prices
from pipeline.errors import MissingDataError
from pipeline.files import sha256_file
from pipeline.sequences.build import build_sequences, sequence_path
from pipeline.sequences.files import (
    FORMAT_KEY,
    read_sequence_file,
    read_sequence_windows,
    sequence_schema,
    windows_frame,
    windows_table,
    write_sequence_file,
)
from pipeline.sequences.windows import TickerWindows

WINDOW = TINY_SEQUENCES.window


def _file(engine: Engine, home: Path, days: int = 40) -> tuple[Path, str]:
    frame = synthetic_prices(("AAA",), days=days)
    with engine.begin() as conn:
        upsert_prices(conn, frame)
        result = build_sequences(conn, home, last_date(frame), config=TINY_SEQUENCES)
    path = sequence_path(home, "AAA")
    assert result.files[0]["sha256"] == sha256_file(path)
    return path, result.files[0]["sha256"]


def test_the_windows_are_the_files_rows(engine: Engine, home: Path) -> None:
    """Every window, target, date and split of the file, recomputed from the compact form."""
    path, digest = _file(engine, home)
    stored = read_sequence_file(path)
    windows = read_sequence_windows(path, digest, WINDOW)
    assert len(windows) == len(stored) == 35
    rows = np.arange(len(stored))
    np.testing.assert_array_equal(
        windows.inputs(rows), stored[c.raw_window_columns(WINDOW)].to_numpy(float)
    )
    np.testing.assert_array_equal(windows.targets(rows), stored[c.TARGET_CLOSE].to_numpy(float))
    assert [day.astype(dt.date) for day in windows.target_dates] == list(stored[c.TARGET_DATE])
    train = np.flatnonzero(stored[c.SPLIT] == c.SPLIT_TRAIN)
    np.testing.assert_array_equal(windows.train_rows(), train)
    np.testing.assert_array_equal(
        windows.validation_rows(), np.flatnonzero(stored[c.SPLIT] == c.SPLIT_VALIDATION)
    )
    assert windows.train_through() == stored[c.TARGET_DATE].iloc[train[-1]]
    # A fine-tune's windows: training targets after a date.
    cut = stored[c.TARGET_DATE].iloc[20]
    np.testing.assert_array_equal(
        windows.train_rows(cut),
        np.flatnonzero((stored[c.SPLIT] == c.SPLIT_TRAIN) & (stored[c.TARGET_DATE] > cut)),
    )
    # Closes: each window starts at its own close.
    assert len(windows.closes) == len(stored) + WINDOW
    np.testing.assert_array_equal(windows.closes[:35], stored["p0"].to_numpy(float))


def test_a_ticker_with_fewer_windows_than_a_window_keeps_every_close() -> None:
    dates = [day.date() for day in pd.bdate_range("2024-01-02", periods=WINDOW + 3)]
    closes = np.linspace(10.0, 20.0, WINDOW + 3)
    frame, _ = windows_frame("AAA", dates, closes, TINY_SEQUENCES)
    windows = TickerWindows.from_frame(frame, WINDOW)
    assert len(windows) == 3 < WINDOW
    np.testing.assert_array_equal(windows.closes, closes)


def test_windows_that_are_not_one_series_or_not_split_in_order_are_refused() -> None:
    dates = [day.date() for day in pd.bdate_range("2024-01-02", periods=30)]
    frame, _ = windows_frame("AAA", dates, np.linspace(10.0, 20.0, 30), TINY_SEQUENCES)
    swapped = frame.copy()
    swapped.loc[3, "p2"] += 1.0
    with pytest.raises(ValueError, match="AAA: the inputs are not the windows of the closes"):
        TickerWindows.from_frame(swapped, WINDOW, "AAA")
    # From the oldest inputs alone (what a file's reader decodes): a target that is not
    # the oldest close of the window ``WINDOW`` rows later.
    targets = frame[c.TARGET_CLOSE].to_numpy(float).copy()
    targets[2] += 1.0
    with pytest.raises(ValueError, match="AAA: the inputs are not the windows of the closes"):
        TickerWindows.from_columns(
            frame[["p0"]].to_numpy(float),
            targets,
            frame[c.TARGET_DATE].to_numpy(),
            frame[c.SPLIT].to_numpy(),
            WINDOW,
            "AAA",
        )
    shuffled = frame.copy()
    shuffled.loc[0, c.SPLIT] = c.SPLIT_VALIDATION
    with pytest.raises(ValueError, match="AAA: the split is not the training windows then"):
        TickerWindows.from_frame(shuffled, WINDOW, "AAA")


def test_a_damaged_or_foreign_file_is_not_read(engine: Engine, home: Path) -> None:
    path, digest = _file(engine, home)
    with pytest.raises(MissingDataError, match="is not the file that was built"):
        read_sequence_windows(path, "0" * 64, WINDOW)
    with pytest.raises(MissingDataError, match="rebuild it with `pricecast sequences`"):
        read_sequence_windows(path, digest, WINDOW + 1)  # no p5 column: another windowing
    path.unlink()
    with pytest.raises(MissingDataError, match="is missing"):
        read_sequence_windows(path, digest, WINDOW)


def test_a_fit_job_carries_the_closes_not_the_files_rows() -> None:
    """What the train stage holds and sends to a worker (a ``NetworkJob``) grows by the
    closes, about 16 bytes a window (a close and a date), not by the sequence file's
    rows: the files' data frames took about nine times as much memory with these
    windows of 5 closes (more with longer windows: each window is a row of them)."""
    import pickle

    from helpers import TINY_MODEL

    from benchmarks.train_memory import synthetic_data
    from pipeline.model.fit import network_jobs

    data, series = synthetic_data(20, 500, TINY_SEQUENCES, seed=3)
    (job,) = network_jobs(data, series, TINY_MODEL, 1, None, "retrain")
    windows = sum(len(ticker) for ticker in job.data.windows.values())
    assert windows == 20 * 500
    size = len(pickle.dumps(job))
    # Each window: its close and its target date (8 + 8 bytes), and the span's closes again.
    assert size < 40 * windows, size
    frames = {
        ticker: windows_frame(ticker, *_series_of(w), TINY_SEQUENCES)[0]
        for ticker, w in job.data.windows.items()
    }
    assert sum(int(frame.memory_usage(deep=True).sum()) for frame in frames.values()) > 8 * size


def _series_of(windows: TickerWindows) -> tuple[list[dt.date], np.ndarray]:
    """The dates and closes a ticker's windows were made of (the first ``window`` closes
    dated on the business days before the first target)."""
    first = pd.Timestamp(windows.target_dates[0])
    before = pd.bdate_range(end=first, periods=windows.window + 1)[:-1]
    dates = [day.date() for day in before] + [day.astype(dt.date) for day in windows.target_dates]
    return dates, windows.closes


def test_a_file_of_fewer_windows_than_a_window_is_read_whole(engine: Engine, home: Path) -> None:
    path, digest = _file(engine, home, days=WINDOW + 3)
    windows = read_sequence_windows(path, digest, WINDOW)
    stored = read_sequence_file(path)
    assert len(windows) == len(stored) == 3
    np.testing.assert_array_equal(
        windows.inputs(np.arange(3)), stored[c.raw_window_columns(WINDOW)].to_numpy(float)
    )
    np.testing.assert_array_equal(windows.targets(np.arange(3)), stored[c.TARGET_CLOSE])


@pytest.mark.parametrize("scaling", ["minmax", "log_ratio"])
@pytest.mark.parametrize("closes_count", [WINDOW + 2, WINDOW + 4, 2 * WINDOW, 2 * WINDOW + 1, 60])
def test_a_file_stores_the_closes_and_reads_back_every_column(
    tmp_path: Path, scaling: str, closes_count: int
) -> None:
    """The file holds ticker, date, split, each window's first close and its target (every
    raw input for fewer windows than a window), and reads back as ``windows_table``'s
    every column, to the bit."""
    config = TINY_SEQUENCES.replace(scaling=scaling)
    rng = np.random.default_rng(closes_count)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, closes_count)))
    dates = [day.date() for day in pd.bdate_range("2024-01-02", periods=closes_count)]
    table, _ = windows_table("AAA", dates, closes, config)
    path = tmp_path / "AAA.parquet"
    digest = write_sequence_file(path, table)
    windows = closes_count - WINDOW
    inputs = c.raw_window_columns(WINDOW) if windows < WINDOW else ["p0"]
    assert pq.read_schema(path).names == [c.TICKER, c.TARGET_DATE, c.SPLIT, *inputs, c.TARGET_CLOSE]
    pd.testing.assert_frame_equal(
        read_sequence_file(path, digest), windows_frame("AAA", dates, closes, config)[0]
    )
    assert read_sequence_file(path, digest).columns.tolist() == sequence_schema(WINDOW).names
    np.testing.assert_array_equal(read_sequence_windows(path, digest, WINDOW).closes, closes)


def test_a_file_of_every_column_as_written_before_still_reads(tmp_path: Path) -> None:
    """A file written before files kept only their closes (every column, no metadata)."""
    closes = np.linspace(10.0, 20.0, 30)
    dates = [day.date() for day in pd.bdate_range("2024-01-02", periods=30)]
    table, _ = windows_table("AAA", dates, closes, TINY_SEQUENCES)
    path = tmp_path / "AAA.parquet"
    pq.write_table(table.replace_schema_metadata(None), path)
    digest = sha256_file(path)
    pd.testing.assert_frame_equal(
        read_sequence_file(path, digest), windows_frame("AAA", dates, closes, TINY_SEQUENCES)[0]
    )
    np.testing.assert_array_equal(read_sequence_windows(path, digest, WINDOW).closes, closes)


def test_a_file_of_an_unknown_format_is_refused(tmp_path: Path) -> None:
    closes = np.linspace(10.0, 20.0, 30)
    dates = [day.date() for day in pd.bdate_range("2024-01-02", periods=30)]
    table, _ = windows_table("AAA", dates, closes, TINY_SEQUENCES)
    made = json.loads(table.schema.metadata[FORMAT_KEY.encode()])
    path = tmp_path / "AAA.parquet"
    write_sequence_file(
        path, table.replace_schema_metadata({FORMAT_KEY: json.dumps({**made, "format": 99})})
    )
    with pytest.raises(MissingDataError, match="format 99"):
        read_sequence_file(path)
