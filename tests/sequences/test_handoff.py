"""The windows a build keeps for the train stage of the same process
(``pipeline.sequences.handoff``): exactly what the files read back as, taken only for
the file and digest they were kept for, and kept no longer than one read."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import TINY_SEQUENCES, spy_on_decoded_files, synthetic_prices
from sqlalchemy.engine import Engine

import pipeline.sequences.read as read
from pipeline import columns as c
from pipeline import stages
from pipeline.db.prices import upsert_prices
from pipeline.sequences import handoff
from pipeline.sequences.build import build_sequences, sequence_path
from pipeline.sequences.files import read_sequence_windows, stored_table, write_sequence_file
from pipeline.sequences.read import SequenceFiles, read_sequences
from pipeline.sequences.windows import TickerWindows


def _day(frame: pd.DataFrame, index: int) -> dt.date:
    return pd.Timestamp(sorted(frame[c.TRADE_DATE].unique())[index]).date()


def _prices() -> pd.DataFrame:
    """Three tickers of 40 days, and one (DDD) with fewer windows than the window."""
    frame = synthetic_prices(("AAA", "BBB", "CCC", "DDD"), days=40)
    short = (frame[c.TICKER] == "DDD") & (frame[c.TRADE_DATE] < pd.Timestamp(_day(frame, 32)))
    return frame[~short].reset_index(drop=True)


def _load(engine: Engine, frame: pd.DataFrame, through: dt.date) -> None:
    with engine.begin() as conn:
        upsert_prices(conn, frame[frame[c.TRADE_DATE] <= pd.Timestamp(through)])


def _build(engine: Engine, home: Path, as_of: dt.date, hand_off: bool) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return build_sequences(conn, home, as_of, config=TINY_SEQUENCES, hand_off=hand_off).files


def _read(engine: Engine, home: Path, as_of: dt.date) -> SequenceFiles:
    with engine.begin() as conn:
        return read_sequences(conn, home, as_of, None, TINY_SEQUENCES)


def _assert_identical(mine: TickerWindows, theirs: TickerWindows) -> None:
    """Field by field, bit for bit."""
    for name in ("closes", "target_dates"):
        a, b = getattr(mine, name), getattr(theirs, name)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), name
        assert a.tobytes() == b.tobytes(), name
    assert (mine.n_train, mine.window) == (theirs.n_train, theirs.window)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files ``read_sequences`` decodes (rather than take their windows)."""
    return spy_on_decoded_files(monkeypatch)


@pytest.fixture(params=["from scratch", "incremental"])
def built(request: pytest.FixtureRequest, engine: Engine, home: Path) -> dt.date:
    """The day a build with ``hand_off`` ran as of: from every close, or from the files
    of two days before and the closes after them."""
    frame = _prices()
    day = _day(frame, 39)
    if request.param == "incremental":
        _load(engine, frame, _day(frame, 37))
        _build(engine, home, _day(frame, 37), hand_off=False)
    _load(engine, frame, day)
    rows = _build(engine, home, day, hand_off=True)
    assert [row[c.TICKER] for row in rows] == ["AAA", "BBB", "CCC", "DDD"]
    if request.param == "incremental":  # DDD was too short two days before
        assert {row[c.TICKER] for row in rows if row["fit_start"] < _day(frame, 32)} == {
            "AAA",
            "BBB",
            "CCC",
        }
    return day


def test_the_windows_kept_are_what_the_files_read_back_as(
    built: dt.date, engine: Engine, home: Path
) -> None:
    with engine.connect() as conn:
        rows = read.sequence_rows(conn, built, None, TINY_SEQUENCES)
    kept = handoff.take()
    assert sorted(kept) == sorted((row["file_path"], row["sha256"]) for row in rows)
    for row in rows:
        path = Path(row["file_path"])
        from_file = read_sequence_windows(path, row["sha256"], TINY_SEQUENCES.window)
        _assert_identical(kept[(row["file_path"], row["sha256"])], from_file)
    assert len(kept[(str(sequence_path(home, "DDD")), rows[3]["sha256"])]) < 5


def test_the_train_stage_takes_them_and_reads_the_same_as_from_the_files(
    built: dt.date, engine: Engine, home: Path, decoded: list[str]
) -> None:
    handed = _read(engine, home, built)
    assert decoded == [] and handoff.kept() == 0  # taken, nothing kept after
    from_files = _read(engine, home, built)
    assert decoded == ["AAA.parquet", "BBB.parquet", "CCC.parquet", "DDD.parquet"]
    assert handed.rows == from_files.rows
    assert list(handed.windows) == list(from_files.windows) == ["AAA", "BBB", "CCC", "DDD"]
    for ticker, windows in handed.windows.items():
        _assert_identical(windows, from_files.windows[ticker])


def test_a_file_replaced_with_its_row_is_read_from_the_disk(
    engine: Engine, home: Path, decoded: list[str]
) -> None:
    """A file that is not the one the windows were kept for, with a row that records it
    (another build of another process), is read from the disk; the others are taken."""
    frame = _prices()
    day = _day(frame, 39)
    _load(engine, frame, day)
    _build(engine, home, day, hand_off=True)
    aaa = frame[frame[c.TICKER] == "AAA"]
    closes = aaa[c.CLOSE].to_numpy() * 1.5
    table, _ = stored_table("AAA", aaa[c.TRADE_DATE].to_numpy(), closes, TINY_SEQUENCES)
    path = sequence_path(home, "AAA")
    digest = write_sequence_file(path, table)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE sequence_files SET sha256 = :sha WHERE ticker = 'AAA'"),
            {"sha": digest},
        )
    files = _read(engine, home, day)
    assert decoded == ["AAA.parquet"]
    assert files.windows["AAA"].closes.tobytes() == closes.tobytes()
    assert handoff.kept() == 0


def test_a_file_damaged_since_the_build_is_reported_and_rebuilt(
    engine: Engine, home: Path, decoded: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Kept windows are taken only from a file that still holds the bytes they were kept
    for: another ticker's file copied over AAA's is reported and rebuilt, as without them."""
    frame = _prices()
    day = _day(frame, 39)
    _load(engine, frame, day)
    _build(engine, home, day, hand_off=True)
    assert handoff.kept() == 4
    path = sequence_path(home, "AAA")
    built = path.read_bytes()
    path.write_bytes(sequence_path(home, "BBB").read_bytes())
    with caplog.at_level(logging.WARNING):
        files = _read(engine, home, day)
    warned = [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0]
    assert path.read_bytes() == built
    assert decoded == []  # the rebuild handed its windows over too
    sha = next(row["sha256"] for row in files.rows if row[c.TICKER] == "AAA")
    _assert_identical(files.windows["AAA"], read_sequence_windows(path, sha, 5))
    assert handoff.kept() == 0


def test_files_kept_as_they_were_hand_nothing_over(
    engine: Engine, home: Path, decoded: list[str]
) -> None:
    """A build again as of the same day keeps the files and rows (nothing new): they are
    not decoded then, so the train stage reads them; and every build drops what an
    earlier one kept."""
    frame = _prices()
    day = _day(frame, 39)
    _load(engine, frame, day)
    _build(engine, home, day, hand_off=True)
    assert handoff.kept() == 4
    _build(engine, home, day, hand_off=True)
    assert handoff.kept() == 0
    _read(engine, home, day)
    assert len(decoded) == 4
    _build(engine, home, day, hand_off=False)
    assert handoff.kept() == 0


def test_the_daily_runs_sequences_hand_over_and_shards_do_not(tmp_path: Path) -> None:
    """``stages.sequences`` (the daily run's, followed by its train stage in the same
    process) keeps the windows; a shard, which may run in a Dask worker that never
    trains, keeps none."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    home = tmp_path / "home"
    frame = _prices()
    day = _day(frame, 39)
    with stages.database(url).begin() as conn:
        upsert_prices(conn, frame)
    stages.sequences_shard(url, str(home), day, ["AAA", "BBB"], TINY_SEQUENCES)
    assert handoff.kept() == 0
    stages.sequences(url, str(home), day, None, TINY_SEQUENCES)
    assert handoff.kept() == 2  # AAA and BBB are kept as they were: CCC and DDD are new
