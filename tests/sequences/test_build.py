"""The sequences stage: file contents, the scaler's span, reruns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_SEQUENCES, last_date, synthetic_prices, table_snapshot
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.prices import upsert_prices
from pipeline.errors import MissingDataError
from pipeline.files import sha256_file
from pipeline.sequences.build import build_sequences, sequence_path
from pipeline.sequences.files import read_sequence_file


def _load(engine: Engine, frame: pd.DataFrame) -> None:
    with engine.begin() as conn:
        upsert_prices(conn, frame)


def test_windows_are_the_scaled_closes_recomputed_independently(engine: Engine, home: Path) -> None:
    frame = synthetic_prices(("AAA",), days=40)
    _load(engine, frame)
    as_of = last_date(frame)
    with engine.begin() as conn:
        result = build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
    closes = frame[c.CLOSE].to_numpy()
    windows = len(closes) - 5  # 35
    n_val = int(np.ceil(windows * 0.2))  # 7
    n_train = windows - n_val  # 28
    fitted = closes[: n_train + 5]
    low, high = fitted.min(), fitted.max()
    row = result.files[0]
    assert (row["train_windows"], row["validation_windows"]) == (n_train, n_val)
    assert row["scaler_params"] == {"min": low, "max": high}
    assert row["fit_end"] == pd.Timestamp(frame[c.TRADE_DATE].iloc[n_train + 4]).date()

    stored = read_sequence_file(sequence_path(home, "AAA"))
    assert len(stored) == windows
    assert (stored[c.SPLIT] == "validation").sum() == n_val
    assert stored[c.SPLIT].iloc[-n_val:].eq("validation").all()
    for i in (0, 17, windows - 1):
        expected_x = (closes[i : i + 5] - low) / (high - low)
        np.testing.assert_allclose(stored.loc[i, c.window_columns(5)].to_numpy(float), expected_x)
        assert stored.loc[i, c.TARGET] == pytest.approx((closes[i + 5] - low) / (high - low))
        assert stored.loc[i, c.TARGET_DATE] == pd.Timestamp(frame[c.TRADE_DATE].iloc[i + 5]).date()


def test_the_scaler_never_sees_the_validation_span(engine: Engine, home: Path) -> None:
    frame = synthetic_prices(("AAA",), days=40)
    # A spike and a crash in the validation span only.
    frame.loc[38, c.CLOSE] = 10_000.0
    frame.loc[39, c.CLOSE] = 0.01
    _load(engine, frame)
    with engine.begin() as conn:
        result = build_sequences(conn, home, last_date(frame), config=TINY_SEQUENCES)
    params = result.files[0]["scaler_params"]
    assert params["max"] < 10_000.0 and params["min"] > 0.01
    stored = read_sequence_file(sequence_path(home, "AAA"))
    assert stored[c.TARGET].iloc[-2] > 1.0  # validation values may leave [0, 1]


def test_prices_after_the_as_of_date_are_not_used(engine: Engine, home: Path) -> None:
    frame = synthetic_prices(("AAA",), days=40)
    _load(engine, frame)
    as_of = pd.Timestamp(frame[c.TRADE_DATE].iloc[29]).date()
    with engine.begin() as conn:
        result = build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
    stored = read_sequence_file(sequence_path(home, "AAA"))
    assert stored[c.TARGET_DATE].max() == as_of
    assert result.files[0]["data_through"] == as_of
    assert len(stored) == 30 - 5


def _built(engine: Engine, home: Path) -> tuple[dt.date, Path]:
    """Two tickers' prices loaded and their sequences built: the as-of date, AAA's file."""
    frame = synthetic_prices(days=40)
    _load(engine, frame)
    as_of = last_date(frame)
    with engine.begin() as conn:
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
    return as_of, sequence_path(home, "AAA")


def test_a_rerun_leaves_files_and_tables_untouched(engine: Engine, home: Path) -> None:
    as_of, path = _built(engine, home)
    digest, mtime = sha256_file(path), path.stat().st_mtime_ns
    before = table_snapshot(engine)
    with engine.begin() as conn:
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
    assert table_snapshot(engine) == before
    assert (sha256_file(path), path.stat().st_mtime_ns) == (digest, mtime)
    assert sorted(p.name for p in (home / "sequences").iterdir()) == ["AAA.parquet", "BBB.parquet"]


@pytest.mark.parametrize("size", ["same size", "shorter"])
def test_a_rerun_rewrites_a_file_whose_bytes_changed(engine: Engine, home: Path, size: str) -> None:
    """Only a file of the new file's size is read and hashed to skip the write; a
    damaged one of either size is written again."""
    as_of, path = _built(engine, home)
    digest, length = sha256_file(path), path.stat().st_size
    path.write_bytes(b"x" * (length if size == "same size" else length // 2))
    with engine.begin() as conn:
        build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
    assert sha256_file(path) == digest


def test_short_histories_are_skipped_with_the_reason(engine: Engine, home: Path) -> None:
    long = synthetic_prices(("AAA",), days=40)
    short = synthetic_prices(("BBB",), days=6)
    _load(engine, pd.concat([long, short]))
    with engine.begin() as conn:
        result = build_sequences(
            conn, home, last_date(long), tickers=["AAA", "BBB", "ZZZ"], config=TINY_SEQUENCES
        )
    assert result.tickers == ["AAA"]
    assert result.skipped == {
        "BBB": f"6 closes on or before {last_date(long)}; needs 7",
        "ZZZ": f"no prices on or before {last_date(long)}",
    }


def test_no_prices_at_all_is_an_error(engine: Engine, home: Path) -> None:
    with (
        pytest.raises(MissingDataError, match="no prices for any active ticker"),
        engine.begin() as conn,
    ):
        build_sequences(conn, home, dt.date(2024, 1, 1), config=TINY_SEQUENCES)


def test_inactive_tickers_are_skipped(engine: Engine, home: Path) -> None:
    from pipeline.db.tickers import add_tickers, set_active

    frame = synthetic_prices(("AAA", "BBB"), days=40)
    _load(engine, frame)
    with engine.begin() as conn:
        add_tickers(conn, ["AAA", "BBB"], "XNYS", activate=True)
        set_active(conn, ["BBB"], False)
        result = build_sequences(conn, home, last_date(frame), config=TINY_SEQUENCES)
        assert result.tickers == ["AAA"]
        explicit = build_sequences(
            conn, home, last_date(frame), tickers=["AAA", "BBB"], config=TINY_SEQUENCES
        )
    assert explicit.skipped == {"BBB": "inactive; `pricecast tickers add` reactivates it"}


def test_adjusted_closes_are_used_where_every_day_has_one(engine: Engine, home: Path) -> None:

    frame = synthetic_prices(("AAA", "BBB"), days=40)
    frame.loc[frame[c.TICKER] == "AAA", c.ADJ_CLOSE] = (
        frame.loc[frame[c.TICKER] == "AAA", c.CLOSE] / 2
    )
    frame.loc[frame.index[-1], c.ADJ_CLOSE] = 1.0  # BBB has one adjusted close only
    _load(engine, frame)
    config = TINY_SEQUENCES.replace(price_field="adj_close")
    with engine.begin() as conn:
        result = build_sequences(conn, home, last_date(frame), config=config)
    params = {row[c.TICKER]: row["scaler_params"] for row in result.files}
    aaa = frame.loc[frame[c.TICKER] == "AAA", c.CLOSE].to_numpy()[:33] / 2
    bbb = frame.loc[frame[c.TICKER] == "BBB", c.CLOSE].to_numpy()[:33]
    assert params["AAA"] == {"min": aaa.min(), "max": aaa.max()}
    assert params["BBB"] == {"min": bbb.min(), "max": bbb.max()}
    assert {row["price_field"] for row in result.files} == {"adj_close"}
