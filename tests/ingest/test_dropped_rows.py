"""A corrected file that no longer holds some rows: exactly those rows of that file go
(``load._delete_dropped_rows``), on every engine."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.db.runs import data_version
from pipeline.db.schema import prices
from pipeline.ingest.load import ingest_paths

AS_OF = dt.date(2024, 1, 31)


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("ticker,date,close\n" + "\n".join(rows) + "\n")
    return path


def _ingest(engine: Engine, *paths: Path) -> object:
    with engine.begin() as conn:
        return ingest_paths(conn, list(paths), as_of=AS_OF)


def _stored(engine: Engine) -> list[tuple[str, int, float, str]]:
    query = sa.select(prices.c.ticker, prices.c.trade_date, prices.c.close, prices.c.source)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(prices.c.ticker, prices.c.trade_date)).all()
    return [(ticker, day.day, float(close), source) for ticker, day, close, source in rows]


def _prices_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return data_version(conn, "prices")


def test_a_corrected_file_drops_exactly_the_rows_it_no_longer_holds(
    portable_engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    days = [f"2024-01-{day:02d}" for day in (2, 3, 4, 5, 8, 9)]
    main = _write(
        tmp_path / "main.csv",
        [f"{ticker},{day},{10 + i}" for ticker in ("AAA", "BBB") for i, day in enumerate(days)],
    )
    other = _write(tmp_path / "other.csv", [f"CCC,{day},5" for day in days])
    _ingest(portable_engine, main, other)
    before = _prices_version(portable_engine)

    # AAA loses 3 and 8 January, BBB loses its first and last day; a row changes too.
    kept = [
        "AAA,2024-01-02,10",
        "AAA,2024-01-04,12",
        "AAA,2024-01-05,99",
        "AAA,2024-01-09,15",
        "BBB,2024-01-03,11",
        "BBB,2024-01-04,12",
        "BBB,2024-01-05,13",
        "BBB,2024-01-08,14",
    ]
    _write(main, kept)
    caplog.set_level(logging.INFO, logger="pipeline.ingest.load")
    report = _ingest(portable_engine, main, other)

    assert [(r.status, r.rows_loaded) for r in report.inputs] == [("loaded", 8), ("unchanged", 0)]
    stored = _stored(portable_engine)
    assert [row for row in stored if row[3] == "main.csv"] == [
        (line.split(",")[0], int(line.split(",")[1][-2:]), float(line.split(",")[2]), "main.csv")
        for line in kept
    ]
    assert [row[:3] for row in stored if row[3] == "other.csv"] == [
        ("CCC", int(day[-2:]), 5.0) for day in days
    ]
    assert _prices_version(portable_engine) > before
    assert f"{main} changed: 4 rows it no longer holds were deleted" in caplog.messages

    # The same content again: nothing dropped, nothing written.
    settled = _prices_version(portable_engine)
    _ingest(portable_engine, main, other)
    assert _stored(portable_engine) == stored
    assert _prices_version(portable_engine) == settled
