"""One test per class of bad input: the exact quarantine rows, and the valid rows still land."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.db.manifest import read_manifest
from pipeline.db.quarantine import read_flags, read_rejected
from pipeline.db.schema import prices
from pipeline.ingest.load import ingest_paths

HEADER = "ticker,date,close,open,high,low,volume"
GOOD_BEFORE = "AAA,2024-01-02,10,10,11,9,100"
GOOD_AFTER = "BBB,2024-01-04,20,20,21,19,200"

# (class, the bad line, reason_code, reason)
ROW_CLASSES = [
    ("short line", "AAA,2024-01-03,10", "shape", "expected 7 fields, found 3"),
    ("long line", "AAA,2024-01-03,10,10,11,9,100,7", "shape", "expected 7 fields, found 8"),
    (
        "ticker with a quote",
        "AA'A,2024-01-03,10,,,,",
        "ticker",
        'ticker "AA\'A" is not a ticker symbol',
    ),
    ("missing ticker", ",2024-01-03,10,,,,", "ticker", "ticker is missing"),
    ("bad date", "AAA,2024-02-30,10,,,,", "date", "date '2024-02-30' is not a date (YYYY-MM-DD)"),
    ("missing date", "AAA,,10,,,,", "date", "date is missing"),
    ("partial date", "AAA,2024-01,10,,,,", "date", "date '2024-01' is not a date (YYYY-MM-DD)"),
    ("year only", "AAA,2024,10,,,,", "date", "date '2024' is not a date (YYYY-MM-DD)"),
    ("compact date", "AAA,20240103,10,,,,", "date", "date '20240103' is not a date (YYYY-MM-DD)"),
    (
        "date with a zone",
        "AAA,2024-01-03T23:30:00-05:00,10,,,,",
        "date",
        "date '2024-01-03T23:30:00-05:00' has a time of day or a time zone; expected the "
        "trading day, YYYY-MM-DD",
    ),
    ("placeholder date", "AAA,0001-01-01,10,,,,", "date", "date '0001-01-01' is before 1800-01-01"),
    ("missing close", "AAA,2024-01-03,,10,11,9,100", "close_missing", "close is missing"),
    ("unparseable close", "AAA,2024-01-03,1O.5,,,,", "number", "close '1O.5' is not a number"),
    ("infinite close", "AAA,2024-01-03,inf,,,,", "not_finite", "close 'inf' is not finite"),
    ("zero close", "AAA,2024-01-03,0,,,,", "not_positive", "close '0' is not a positive price"),
    (
        "absurd close",
        "AAA,2024-01-03,1e308,,,,",
        "implausible",
        "close '1e308' is above 1e+09, the highest price accepted (PRICECAST_MAX_PRICE)",
    ),
    (
        "negative low",
        "AAA,2024-01-03,10,10,11,-9,",
        "not_positive",
        "low '-9' is not a positive price",
    ),
    ("negative volume", "AAA,2024-01-03,10,,,,-5", "negative_volume", "volume '-5' is negative"),
    (
        "high below low",
        "AAA,2024-01-03,10,10,9,11,",
        "high_below_low",
        "high 9.0 is below low 11.0",
    ),
    (
        "close above high",
        "AAA,2024-01-03,12,10,11,9,",
        "close_outside_range",
        "close 12.0 is outside low 9.0 to high 11.0",
    ),
]


def _prices(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(prices.c.ticker, prices.c.trade_date, prices.c.close).order_by(
                prices.c.ticker, prices.c.trade_date
            )
        ).all()
    return [tuple(row) for row in rows]


GOOD_ROWS = [("AAA", dt.date(2024, 1, 2), 10.0), ("BBB", dt.date(2024, 1, 4), 20.0)]


@pytest.mark.parametrize(
    ("case", "line", "code", "reason"), ROW_CLASSES, ids=[r[0] for r in ROW_CLASSES]
)
def test_a_bad_row_is_quarantined_and_the_rest_loads(
    engine: Engine, tmp_path: Path, case: str, line: str, code: str, reason: str
) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("\n".join([HEADER, GOOD_BEFORE, line, GOOD_AFTER]) + "\n")
    with engine.begin() as conn:
        report = ingest_paths(conn, [path], run_id="run-1")
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (3, 2, 1)
    assert _prices(engine) == GOOD_ROWS
    with engine.connect() as conn:
        rejected = read_rejected(conn)
        manifest = read_manifest(conn)
    fields = line.split(",")
    assert len(rejected) == 1
    row = rejected.iloc[0]
    assert (row.source, row.line, row.run_id) == (str(path), 3, "run-1")
    assert (row.ticker, row.trade_date) == (fields[0], fields[1] if len(fields) > 1 else "")
    assert (row.reason_code, row.reason) == (code, reason)
    assert row.raw == dict(zip(HEADER.split(","), fields, strict=False))
    assert manifest[["rows_read", "rows_loaded", "rows_quarantined"]].iloc[0].tolist() == [3, 2, 1]


def test_duplicates_keep_the_last_and_quarantine_the_earlier(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "dup.csv"
    path.write_text(
        "ticker,date,close\nAAA,2024-01-02,10\nAAA,2024-01-03,11\nAAA,2024-01-02,10.5\n"
    )
    with engine.begin() as conn:
        report = ingest_paths(conn, [path])
        rejected = read_rejected(conn)
    assert (report.rows_loaded, report.rows_quarantined) == (2, 1)
    assert _prices(engine) == [
        ("AAA", dt.date(2024, 1, 2), 10.5),
        ("AAA", dt.date(2024, 1, 3), 11.0),
    ]
    assert rejected[["line", "reason_code", "reason"]].values.tolist() == [
        [2, "duplicate", "duplicate of AAA on 2024-01-02; superseded by line 4"]
    ]


def test_several_reasons_are_all_given(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("ticker,date,close,volume\nA'A,someday,-1,x\n")
    with engine.begin() as conn:
        ingest_paths(conn, [path])
        row = read_rejected(conn).iloc[0]
    assert row.reason_code == "ticker"
    assert row.reason == (
        "ticker \"A'A\" is not a ticker symbol; date 'someday' is not a date (YYYY-MM-DD); "
        "close '-1' is not a positive price; volume 'x' is not a number"
    )


def test_a_wide_file_quarantines_cells_and_bad_headers(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("date,AAA,B B\n2024-01-02,10,5\n2024-01-03,abc,6\n")
    with engine.begin() as conn:
        report = ingest_paths(conn, [path])
        rejected = read_rejected(conn)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (4, 1, 3)
    assert _prices(engine) == [("AAA", dt.date(2024, 1, 2), 10.0)]
    assert rejected[["line", "ticker", "reason_code"]].values.tolist() == [
        [2, "B B", "ticker"],
        [3, "AAA", "number"],
        [3, "B B", "ticker"],
    ]
    assert rejected.iloc[1].raw == {"date": "2024-01-03", "AAA": "abc"}


def test_an_unreadable_file_is_rejected_whole_and_the_run_goes_on(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "a.csv").write_bytes(b"<html><body>error</body></html>")
    (tmp_path / "b.csv").write_text("ticker,date,close\nAAA,2024-01-02,10\n")
    with engine.begin() as conn:
        report = ingest_paths(conn, [tmp_path])
        manifest = read_manifest(conn)
    assert [(r.status, r.rows_loaded) for r in report.inputs] == [("rejected", 0), ("loaded", 1)]
    assert (
        report.inputs[0].error
        == f"{tmp_path / 'a.csv'}, line 1: the input is an HTML page, not CSV"
    )
    assert manifest["status"].tolist() == ["rejected", "loaded"]
    assert _prices(engine) == [("AAA", dt.date(2024, 1, 2), 10.0)]


def test_rows_after_the_as_of_date_are_deferred_then_loaded(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("ticker,date,close\nAAA,2024-01-02,10\nAAA,2024-01-03,11\nAAA,2024-01-04,12\n")
    with engine.begin() as conn:
        first = ingest_paths(conn, [path], as_of=dt.date(2024, 1, 2))
    assert (first.rows_read, first.rows_loaded, first.rows_deferred) == (3, 1, 2)
    with engine.begin() as conn:
        again = ingest_paths(conn, [path], as_of=dt.date(2024, 1, 2))
    assert again.inputs[0].status == "unchanged"
    with engine.begin() as conn:
        later = ingest_paths(conn, [path], as_of=dt.date(2024, 1, 3))
    assert (later.rows_loaded, later.rows_deferred) == (2, 1)
    assert [row[1].day for row in _prices(engine)] == [2, 3]


def test_jumps_and_closed_days_are_flagged_not_dropped(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    # 2024-01-06 is a Saturday; 2024-01-08 doubles the close.
    path.write_text(
        "ticker,date,close\nAAA,2024-01-05,10\nAAA,2024-01-06,10.1\nAAA,2024-01-08,20.2\n"
    )
    with engine.begin() as conn:
        report = ingest_paths(conn, [path])
        flags = read_flags(conn)
    assert report.rows_loaded == 3
    assert flags[["trade_date", "flag", "detail"]].values.tolist() == [
        [dt.date(2024, 1, 6), "closed_day", "XNYS did not trade that day"],
        [dt.date(2024, 1, 8), "jump", "close moved 100.0% from 10.1"],
    ]
    later = tmp_path / "q.csv"
    later.write_text("ticker,date,close\nAAA,2024-01-09,5\n")
    with engine.begin() as conn:
        ingest_paths(conn, [later])
        flags = read_flags(conn)
    assert flags.iloc[-1][["trade_date", "detail"]].tolist() == [
        dt.date(2024, 1, 9),
        "close moved -75.2% from 20.2",
    ]


def test_a_close_dated_after_the_latest_session_is_quarantined(
    engine: Engine, tmp_path: Path
) -> None:
    """At 2024-01-05 20:00 UTC (a Friday, 15:00 in New York), XNYS's latest session is
    that Friday; the Saturday after and 2099 are in the future."""
    path = tmp_path / "p.csv"
    path.write_text("ticker,date,close\nAAA,2024-01-05,10\nAAA,2024-01-06,11\nAAA,2099-01-02,12\n")
    now = dt.datetime(2024, 1, 5, 20, 0, tzinfo=dt.UTC)
    with engine.begin() as conn:
        report = ingest_paths(conn, [path], now=now)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (3, 1, 2)
    assert _prices(engine) == [("AAA", dt.date(2024, 1, 5), 10.0)]
    with engine.connect() as conn:
        rejected = read_rejected(conn).sort_values("line")
    assert rejected["reason_code"].tolist() == ["future", "future"]
    assert rejected["reason"].tolist() == [
        "date '2024-01-06' is after the latest session (2024-01-05) of its exchange at the "
        "time of the run",
        "date '2099-01-02' is after the latest session (2024-01-05) of its exchange at the "
        "time of the run",
    ]
    # At 04:00 UTC on the 5th it is 23:00 on the 4th in New York: the 5th is the future.
    early = tmp_path / "early.csv"
    early.write_text("ticker,date,close\nBBB,2024-01-05,20\n")
    with engine.begin() as conn:
        before = ingest_paths(conn, [early], now=dt.datetime(2024, 1, 5, 4, 0, tzinfo=dt.UTC))
    assert (before.rows_loaded, before.rows_quarantined) == (0, 1)


def test_a_partial_date_never_overwrites_a_real_close(engine: Engine, tmp_path: Path) -> None:
    """``2024-01`` once read as 2024-01-01 and replaced that day's close; a midnight
    timestamp without a zone is still its date."""
    real = tmp_path / "real.csv"
    real.write_text("ticker,date,close\nAAA,2024-01-02,175.0\n")
    later = tmp_path / "later.csv"
    later.write_text("ticker,date,close\nAAA,2024-01,1.0\nAAA,2024-01-03T00:00:00,176.5\n")
    with engine.begin() as conn:
        ingest_paths(conn, [real])
        report = ingest_paths(conn, [later])
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    assert _prices(engine) == [
        ("AAA", dt.date(2024, 1, 2), 175.0),
        ("AAA", dt.date(2024, 1, 3), 176.5),
    ]


def test_a_poison_input_is_undone_and_the_folder_goes_on(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input that fails in a way no rule foresaw is rolled back and rejected whole,
    named; the other files of the folder load."""
    from pipeline.ingest import load

    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.csv").write_text("ticker,date,close\nAAA,2024-01-02,10\n")
    (folder / "b.csv").write_text("ticker,date,close\nBBB,2024-01-02,20\nBBB,2024-01-03,x\n")
    (folder / "c.csv").write_text("ticker,date,close\nCCC,2024-01-02,30\n")
    real = load.quarantine_rows

    def poison(conn, rejected, **options):  # noqa: ANN001, ANN003, ANN202 - after b's upsert
        if options["source"].endswith("b.csv"):
            raise TypeError("a bug no rule foresaw")
        return real(conn, rejected, **options)

    monkeypatch.setattr(load, "quarantine_rows", poison)
    with engine.begin() as conn:
        report = ingest_paths(conn, [folder])
    assert [(i.origin.rsplit("/", 1)[-1], i.status) for i in report.inputs] == [
        ("a.csv", "loaded"),
        ("b.csv", "rejected"),
        ("c.csv", "loaded"),
    ]
    assert "b.csv: could not be ingested: unexpected TypeError: a bug" in report.inputs[1].error
    assert [row[0] for row in _prices(engine)] == ["AAA", "CCC"]  # b's row was undone
    with engine.connect() as conn:
        assert read_rejected(conn).empty  # and so was its quarantined row
        statuses = read_manifest(conn).set_index("origin")["status"]
    assert statuses[str(folder / "b.csv")] == "rejected"


def test_a_nul_in_a_field_is_quarantined_on_every_engine(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "nul.parquet"
    pd.DataFrame(
        {
            "ticker": ["A\x00A", "BBB"],
            "date": pd.to_datetime(["2024-01-02", "2024-01-02"]),
            "close": [10.0, 20.0],
        }
    ).to_parquet(path)
    with engine.begin() as conn:
        report = ingest_paths(conn, [path])
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    with engine.connect() as conn:
        rejected = read_rejected(conn)
    assert rejected.iloc[0].ticker == "A\\x00A"
    assert rejected.iloc[0].reason_code == "ticker"


def test_a_flag_keeps_its_first_sighting_on_every_engine(portable_db_url: str) -> None:
    """``record_flags`` writes through ``bulk_upsert`` with a rule that never replaces: a
    flag seen again (another run, another detail) stays as first stored; new ones land."""
    from pipeline.db.migrate import open_database
    from pipeline.db.quarantine import record_flags

    def flags(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "ticker": [ticker for ticker, _, _ in rows],
                "trade_date": pd.to_datetime([day for _, day, _ in rows]),
                "flag": "closed_day",
                "detail": [detail for _, _, detail in rows],
                "line": range(2, 2 + len(rows)),
            }
        )

    engine = open_database(portable_db_url)
    try:
        with engine.begin() as conn:
            first = flags([("AAA", "2024-01-06", "first"), ("BBB", "2024-01-06", "first")])
            assert record_flags(conn, first, source="a.csv", run_id="run-1") == 2
        with engine.begin() as conn:
            again = flags([("AAA", "2024-01-06", "second"), ("AAA", "2024-01-07", "second")])
            assert record_flags(conn, again, source="b.csv", run_id="run-2") == 2
            stored = read_flags(conn)
        assert stored[["ticker", "trade_date", "detail", "source", "run_id"]].values.tolist() == [
            ["AAA", dt.date(2024, 1, 6), "first", "a.csv", "run-1"],
            ["AAA", dt.date(2024, 1, 7), "second", "b.csv", "run-2"],
            ["BBB", dt.date(2024, 1, 6), "first", "a.csv", "run-1"],
        ]
    finally:
        engine.dispose()
