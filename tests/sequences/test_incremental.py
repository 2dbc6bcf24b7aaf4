"""The sequences stage keeps each ticker's closes from its file and reads only the
closes after it, unless the file is not the one recorded or a close within its span
changed: the files and rows are those a build from every close gives."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import TINY_SEQUENCES, synthetic_prices
from sqlalchemy.engine import Engine

import pipeline.sequences.build as build
from pipeline import columns as c
from pipeline.db.prices import upsert_prices
from pipeline.db.sequences import price_revisions_of, read_sequence_files
from pipeline.sequences.build import build_sequences, sequence_path
from pipeline.sequences.files import (
    encode_sequence_file,
    read_sequence_windows,
    stored_table,
    ticker_windows,
)


def _day(frame: pd.DataFrame, index: int) -> dt.date:
    return pd.Timestamp(sorted(frame[c.TRADE_DATE].unique())[index]).date()


def _build(engine: Engine, home: Path, as_of: dt.date) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
    with engine.connect() as conn:
        return read_sequence_files(conn, as_of)


def _full_build(engine: Engine, home: Path, as_of: dt.date) -> list[dict[str, Any]]:
    """A build from every close: no file or row to keep."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM sequence_files"))
    shutil.rmtree(home / "sequences")
    return _build(engine, home, as_of)


def _files(home: Path, rows: list[dict[str, Any]]) -> dict[str, bytes]:
    return {row[c.TICKER]: sequence_path(home, row[c.TICKER]).read_bytes() for row in rows}


@pytest.fixture
def whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The tickers argument of each read of whole histories."""
    calls: list[Any] = []
    read = build.read_close_arrays

    def spy(conn: Any, through: dt.date, tickers: Any = None, **kwargs: Any) -> Any:
        calls.append(None if tickers is None else sorted(tickers))
        return read(conn, through, tickers, **kwargs)

    monkeypatch.setattr(build, "read_close_arrays", spy)
    return calls


def test_a_new_day_reads_only_the_new_closes(
    engine: Engine, home: Path, whole_reads: list[Any]
) -> None:
    frame = synthetic_prices(days=40)
    with engine.begin() as conn:
        upsert_prices(conn, frame[frame[c.TRADE_DATE] <= pd.Timestamp(_day(frame, 29))])
    _build(engine, home, _day(frame, 29))
    assert whole_reads == [None]
    with engine.begin() as conn:
        upsert_prices(conn, frame)
    # Two days later (a gap: the second day's closes are read too).
    rows = _build(engine, home, _day(frame, 31))
    assert whole_reads == [None]
    assert {row["data_through"] for row in rows} == {_day(frame, 31)}
    files = _files(home, rows)
    full = _full_build(engine, home, _day(frame, 31))
    assert whole_reads == [None, None]
    assert rows == full and files == _files(home, full)


def test_a_changed_close_within_a_files_span_rebuilds_its_ticker(
    engine: Engine, home: Path, whole_reads: list[Any]
) -> None:
    frame = synthetic_prices(days=40)
    with engine.begin() as conn:
        upsert_prices(conn, frame)
    as_of = _day(frame, 39)
    _build(engine, home, as_of)
    revised = frame[
        (frame[c.TICKER] == "AAA") & (frame[c.TRADE_DATE] == pd.Timestamp(_day(frame, 3)))
    ]
    with engine.begin() as conn:
        upsert_prices(conn, revised.assign(**{c.CLOSE: 123.0, c.SOURCE: "zz-revised.csv"}))
        assert price_revisions_of(conn) == {"AAA": _day(frame, 3)}
    rows = _build(engine, home, as_of)
    assert whole_reads == [None, ["AAA"]]
    with engine.connect() as conn:
        assert price_revisions_of(conn) == {}
    files = _files(home, rows)
    assert {row[c.TICKER]: row["fit_start"] for row in rows}["AAA"] == _day(frame, 0)
    full = _full_build(engine, home, as_of)
    assert rows == full and files == _files(home, full)


def test_a_file_not_as_recorded_is_built_from_every_close(
    engine: Engine, home: Path, whole_reads: list[Any]
) -> None:
    frame = synthetic_prices(days=40)
    with engine.begin() as conn:
        upsert_prices(conn, frame)
    as_of = _day(frame, 39)
    before = _build(engine, home, as_of)
    files = _files(home, before)
    # BBB's file replaced by AAA's: its closes must not be kept.
    sequence_path(home, "BBB").write_bytes(files["AAA"])
    rows = _build(engine, home, as_of)
    assert whole_reads == [None, ["BBB"]]
    assert rows == before and _files(home, rows) == files


def test_without_the_triggers_every_close_is_read(
    engine: Engine, home: Path, whole_reads: list[Any]
) -> None:
    """A prices table that lost a trigger (rebuilt by hand) cannot vouch for a file's span."""
    frame = synthetic_prices(days=40)
    with engine.begin() as conn:
        upsert_prices(conn, frame)
    as_of = _day(frame, 39)
    before = _build(engine, home, as_of)
    with engine.begin() as conn:
        suffix = " ON prices" if conn.dialect.name == "postgresql" else ""
        conn.execute(sa.text(f"DROP TRIGGER prices_revised_update{suffix}"))
    assert _build(engine, home, as_of) == before
    assert whole_reads == [None, None]


def test_each_day_appended_is_the_file_a_build_from_every_close_gives(
    engine: Engine, home: Path, whole_reads: list[Any]
) -> None:
    """Day by day from a ticker's first usable day (fewer windows than a window: the file
    stores every input) past the days its split and scaler's span move: each file kept
    and appended to is the bytes, row and windows of the ticker's closes built whole."""
    frame = synthetic_prices(days=24)
    with engine.begin() as conn:
        upsert_prices(conn, frame)
    first = build.minimum_closes(TINY_SEQUENCES) - 1
    for index in range(first, 24):
        as_of = _day(frame, index)
        rows = _build(engine, home, as_of)
        for row in rows:
            mine = frame[(frame[c.TICKER] == row[c.TICKER]) & (frame[c.TRADE_DATE] <= str(as_of))]
            dates = mine[c.TRADE_DATE].to_numpy(dtype="datetime64[D]")
            closes = mine[c.CLOSE].to_numpy(dtype=float)
            table, description = stored_table(row[c.TICKER], dates, closes, TINY_SEQUENCES)
            path = sequence_path(home, row[c.TICKER])
            assert path.read_bytes() == encode_sequence_file(table)
            assert {key: row[key] for key in description} == description
            windows = read_sequence_windows(path, row["sha256"], TINY_SEQUENCES.window)
            expected, _ = ticker_windows(dates, closes, TINY_SEQUENCES)
            assert windows.closes.tobytes() == expected.closes.tobytes()
            assert windows.target_dates.tolist() == expected.target_dates.tolist()
            assert windows.n_train == expected.n_train
    assert whole_reads == [None]  # every later day kept the files and read the new closes
