"""The ingest stage against SQLite and PostgreSQL: counts, upserts, reruns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import synthetic_prices, table_snapshot, write_long_csv
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.prices import count_prices, read_closes
from pipeline.db.schema import prices
from pipeline.errors import InputFileError
from pipeline.ingest.load import ingest_paths


def test_ingest_loads_every_row_and_a_rerun_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    frame = synthetic_prices(days=30)
    path = write_long_csv(frame, tmp_path / "prices.csv")
    with engine.begin() as conn:
        report = ingest_paths(conn, [path])
    assert (report.rows_read, report.rows_loaded) == (60, 60)
    assert report.tickers == ["AAA", "BBB"]
    before = table_snapshot(engine)
    with engine.begin() as conn:
        ingest_paths(conn, [path])
    assert table_snapshot(engine) == before
    with engine.connect() as conn:
        stored = read_closes(conn, dt.date(2030, 1, 1))
    assert stored[c.CLOSE].round(6).tolist() == frame[c.CLOSE].round(6).tolist()


def test_a_later_file_replaces_the_rows_it_covers(engine: Engine, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text("ticker,date,close\nAAA,2024-01-02,10\nAAA,2024-01-03,11\n")
    second = tmp_path / "second.csv"
    second.write_text("ticker,date,close,volume\nAAA,2024-01-03,12,500\n")
    with engine.begin() as conn:
        ingest_paths(conn, [first, second])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                prices.c.trade_date, prices.c.close, prices.c.volume, prices.c.source
            ).order_by(prices.c.trade_date)
        ).all()
    assert [tuple(row) for row in rows] == [
        (dt.date(2024, 1, 2), 10.0, None, "first.csv"),
        (dt.date(2024, 1, 3), 12.0, 500.0, "second.csv"),
    ]


def test_rows_after_the_as_of_date_and_other_tickers_are_counted_not_loaded(
    engine: Engine, tmp_path: Path
) -> None:
    frame = synthetic_prices(("AAA", "BBB", "CCC"), days=10)
    path = write_long_csv(frame, tmp_path / "prices.csv")
    as_of = dt.date(2024, 1, 5)  # the 5th business day
    with engine.begin() as conn:
        report = ingest_paths(conn, [path], as_of=as_of, tickers=["aaa", "BBB"])
    assert report.rows_read == 30
    assert report.rows_other_tickers == 10
    assert report.rows_after_as_of == 10
    assert report.rows_loaded == 10
    assert report.rows_read == (
        report.rows_loaded + report.rows_after_as_of + report.rows_other_tickers
    )
    with engine.connect() as conn:
        assert count_prices(conn) == 10
        latest = conn.execute(sa.select(sa.func.max(prices.c.trade_date))).scalar_one()
    assert latest == as_of


def test_a_bad_file_loads_nothing(engine: Engine, tmp_path: Path) -> None:
    good = write_long_csv(synthetic_prices(days=5), tmp_path / "good.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("ticker,date,close\nAAA,2024-01-02,x\n")
    with pytest.raises(InputFileError, match="bad.csv, line 2"), engine.begin() as conn:
        ingest_paths(conn, [good, bad])
    with engine.connect() as conn:
        assert count_prices(conn) == 0
