"""The ingest stage: manifest, reruns, overlapping and out-of-order files, the universe."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import synthetic_prices, table_snapshot, write_long_csv
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.manifest import read_manifest
from pipeline.db.migrate import open_database
from pipeline.db.prices import read_closes
from pipeline.db.schema import metadata, prices
from pipeline.db.tickers import read_tickers
from pipeline.ingest.load import ingest_paths


def _prices(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(prices).order_by(prices.c.ticker, prices.c.trade_date)).all()
    return [tuple(row) for row in rows]


def _ingest(engine: Engine, *paths: Path, **options) -> object:  # noqa: ANN003
    with engine.begin() as conn:
        return ingest_paths(conn, list(paths), **options)


def test_ingest_loads_every_row_and_a_rerun_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    frame = synthetic_prices(days=30)
    path = write_long_csv(frame, tmp_path / "prices.csv")
    report = _ingest(engine, path)
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (60, 60, 0)
    assert report.tickers == ["AAA", "BBB"]
    before = table_snapshot(engine)
    again = _ingest(engine, path)
    assert [r.status for r in again.inputs] == ["unchanged"]
    assert table_snapshot(engine) == before
    with engine.connect() as conn:
        stored = read_closes(conn, dt.date(2030, 1, 1))
    assert stored[c.CLOSE].round(6).tolist() == frame[c.CLOSE].round(6).tolist()


def test_re_dropping_the_same_file_is_a_no_op(engine: Engine, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    source = write_long_csv(synthetic_prices(days=10), tmp_path / "prices-2024-01.csv")
    shutil.copy(source, drop / source.name)
    _ingest(engine, drop)
    before = table_snapshot(engine)
    (drop / source.name).unlink()
    shutil.copy(source, drop / source.name)
    os.utime(drop / source.name, (1e9, 1e9))
    report = _ingest(engine, drop)
    assert [r.status for r in report.inputs] == ["unchanged"]
    assert table_snapshot(engine) == before


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("ticker,date,close\n" + "\n".join(rows) + "\n")
    return path


def test_overlapping_and_out_of_order_files_converge_to_one_clean_load(
    db_url: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    first = _write(
        files / "prices-2024-01-03.csv",
        ["AAA,2024-01-02,10", "AAA,2024-01-03,11", "BBB,2024-01-03,5"],
    )
    second = _write(  # overlaps the first and corrects AAA on 2024-01-03
        files / "prices-2024-01-05.csv",
        ["AAA,2024-01-03,11.5", "AAA,2024-01-04,12", "AAA,2024-01-05,13"],
    )
    third = _write(files / "prices-2024-01-08.csv", ["BBB,2024-01-04,6", "AAA,2024-01-08,14"])

    def load(order: list[Path]) -> list[tuple]:
        engine = open_database(db_url)
        with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(sa.delete(table))
        for path in order:
            _ingest(engine, path)
        result = [row[:6] for row in _prices(engine)]
        engine.dispose()
        return result

    clean = load([files])
    assert ("AAA", dt.date(2024, 1, 3), None, None, None, 11.5) in clean
    for order in ([first, second, third], [third, second, first], [second, third, first]):
        assert load(order) == clean, order


def test_a_corrected_file_replaces_the_rows_it_covers(engine: Engine, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.csv", ["AAA,2024-01-02,10", "AAA,2024-01-03,99", "AAA,2024-01-04,12"]
    )
    _ingest(engine, path)
    _write(path, ["AAA,2024-01-02,10", "AAA,2024-01-03,11"])
    report = _ingest(engine, path)
    assert report.inputs[0].status == "loaded"
    assert [(row[1].day, row[5]) for row in _prices(engine)] == [(2, 10.0), (3, 11.0)]


def test_the_universe_is_filled_on_first_ingest(engine: Engine, tmp_path: Path) -> None:
    path = write_long_csv(synthetic_prices(("AAA", "BBB"), days=5), tmp_path / "p.csv")
    _ingest(engine, path, exchange="XNAS")
    with engine.connect() as conn:
        universe = read_tickers(conn)
    assert [(t["symbol"], t["exchange"], t["active"]) for t in universe] == [
        ("AAA", "XNAS", True),
        ("BBB", "XNAS", True),
    ]
    assert (universe[0]["first_date"], universe[0]["last_date"]) == (
        dt.date(2024, 1, 1),
        dt.date(2024, 1, 5),
    )


def test_files_load_whole_whatever_tickers_are_asked_for(engine: Engine, tmp_path: Path) -> None:
    path = write_long_csv(synthetic_prices(("AAA", "BBB"), days=5), tmp_path / "p.csv")
    report = _ingest(engine, path, tickers=["AAA"])
    assert report.rows_loaded == 10
    frame = pd.DataFrame(_prices(engine))
    assert sorted(frame[0].unique()) == ["AAA", "BBB"]


def test_a_folder_is_one_info_line_and_each_file_a_debug_line(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    for ticker in ("AAA", "BBB", "CCC"):
        write_long_csv(synthetic_prices((ticker,), days=5), folder / f"{ticker}.csv")
    caplog.set_level(logging.DEBUG, logger="pipeline.ingest.load")
    _ingest(engine, folder)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(info) == 2 and info[0].startswith("ingesting from")
    assert info[1].endswith(
        ": 3 inputs (0 unchanged, 0 rejected); 15 rows read, 15 loaded, 0 quarantined, "
        "0 deferred, 0 superseded, 3 flagged"  # 2024-01-01, a holiday, flagged once per ticker
    )
    assert sorted(line.split(": ")[0].rsplit("/", 1)[-1] for line in debug) == [
        "AAA.csv",
        "BBB.csv",
        "CCC.csv",
    ]


# --- bounded inputs --------------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_rejected_unread_and_the_others_load(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    for ticker in ("AAA", "CCC"):
        write_long_csv(synthetic_prices((ticker,), days=5), folder / f"{ticker}.csv")
    big = folder / "BBB.csv"
    big.write_text("ticker,date,close\n" + "BBB,2024-01-02,1.0\n" * 1000)
    size = big.stat().st_size
    read = []
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        read.append(self.name)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)

    report = _ingest(engine, folder, max_input_bytes=size - 1)

    assert read == ["AAA.csv", "CCC.csv"]  # BBB.csv was never opened
    assert [(Path(r.origin).name, r.status, r.rows_loaded) for r in report.inputs] == [
        ("AAA.csv", "loaded", 5),
        ("BBB.csv", "rejected", 0),
        ("CCC.csv", "loaded", 5),
    ]
    error = report.inputs[1].error
    assert error == (
        f"{big}: {size:,} bytes (0.0 MiB), over the size limit of {size - 1:,} bytes "
        "(PRICECAST_MAX_INPUT_BYTES); rejected unread: split the input, or raise the limit"
    )
    assert report.summary().inputs_rejected == 1
    with engine.connect() as conn:
        manifest = read_manifest(conn).set_index("origin")
    assert manifest.loc[str(big), ["status", "error", "rows_read"]].tolist() == [
        "rejected",
        error,
        0,
    ]
    # each run rejects it again, unread; with a higher limit it loads
    read.clear()
    again = _ingest(engine, folder, max_input_bytes=size - 1)
    assert [r.status for r in again.inputs] == ["unchanged", "rejected", "unchanged"]
    assert read == ["AAA.csv", "CCC.csv"]  # hashed to see they are unchanged
    raised = _ingest(engine, folder, max_input_bytes=size)
    assert [(r.status, r.rows_read) for r in raised.inputs] == [
        ("unchanged", 0),
        ("loaded", 1000),
        ("unchanged", 0),
    ]


def test_a_gzipped_file_may_not_decompress_past_the_limit(engine: Engine, tmp_path: Path) -> None:
    import gzip

    text = ("ticker,date,close\n" + "BBB,2024-01-02,1.0\n" * 10_000).encode()
    path = tmp_path / "BBB.csv.gz"
    path.write_bytes(gzip.compress(text))
    assert path.stat().st_size < 10_000 < len(text)

    report = _ingest(engine, path, max_input_bytes=10_000)

    (result,) = report.inputs
    assert result.status == "rejected"
    assert result.error == (
        f"{path}: decompressed, more than 10,000 bytes, over the size limit of 10,000 bytes "
        "(PRICECAST_MAX_INPUT_BYTES); rejected: split the input, or raise the limit"
    )
    assert _ingest(engine, path, max_input_bytes=len(text)).inputs[0].rows_read == 10_000


# --- superseded rows -------------------------------------------------------------------------


def _counts(report: object) -> list[tuple]:
    return [
        (
            Path(r.origin).name,
            r.rows_read,
            r.rows_loaded,
            r.rows_quarantined,
            r.rows_deferred,
            r.rows_superseded,
        )
        for r in report.inputs  # type: ignore[attr-defined]
    ]


def _manifest_counts(engine: Engine) -> dict[str, list[int]]:
    names = ["rows_read", "rows_loaded", "rows_quarantined", "rows_deferred", "rows_superseded"]
    with engine.connect() as conn:
        manifest = read_manifest(conn)
    return {
        Path(origin).name: [int(value) for value in values]
        for origin, *values in manifest[["origin", *names]].itertuples(index=False)
    }


def test_a_row_replaced_by_a_later_file_of_the_same_ingest_is_superseded(
    engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _write(folder / "prices-1.csv", ["AAA,2024-01-02,10", "AAA,2024-01-03,11"])
    _write(folder / "prices-2.csv", ["AAA,2024-01-03,11.5", "AAA,2024-01-04,12"])

    report = _ingest(engine, folder)

    assert _counts(report) == [
        ("prices-1.csv", 2, 1, 0, 0, 1),
        ("prices-2.csv", 2, 2, 0, 0, 0),
    ]
    assert (report.rows_read, report.rows_loaded, report.rows_superseded) == (4, 3, 1)
    assert report.summary().rows_superseded == 1
    assert len(_prices(engine)) == report.rows_loaded
    assert _manifest_counts(engine) == {
        "prices-1.csv": [2, 1, 0, 0, 1],
        "prices-2.csv": [2, 2, 0, 0, 0],
    }


def test_superseded_rows_are_counted_on_every_engine(portable_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    _write(folder / "prices-1.csv", ["AAA,2024-01-02,10", "AAA,2024-01-03,11"])
    _write(folder / "prices-2.csv", ["AAA,2024-01-03,11.5", "AAA,2024-01-04,12"])
    late = _write(tmp_path / "prices-0.csv", ["AAA,2024-01-04,13", "AAA,2024-01-05,14"])
    engine = open_database(portable_db_url)
    try:
        first = _ingest(engine, folder)
        second = _ingest(engine, late)
        assert [r.rows_superseded for r in first.inputs] == [1, 0]
        assert _counts(second) == [("prices-0.csv", 2, 1, 0, 0, 1)]
        assert len(_prices(engine)) == 4
    finally:
        engine.dispose()


def test_a_row_kept_out_by_a_stored_later_file_is_superseded(
    engine: Engine, tmp_path: Path
) -> None:
    later = _write(tmp_path / "prices-2.csv", ["AAA,2024-01-03,11.5", "AAA,2024-01-04,12"])
    earlier = _write(tmp_path / "prices-1.csv", ["AAA,2024-01-02,10", "AAA,2024-01-03,11"])
    _ingest(engine, later)

    report = _ingest(engine, earlier)

    assert _counts(report) == [("prices-1.csv", 2, 1, 0, 0, 1)]
    assert _manifest_counts(engine)["prices-1.csv"] == [2, 1, 0, 0, 1]
    stored = {row[1]: (row[5], row[-1]) for row in _prices(engine)}
    assert stored[dt.date(2024, 1, 3)] == (11.5, "prices-2.csv")


def test_a_file_row_replaced_by_a_feed_of_the_same_ingest_is_superseded(
    engine: Engine, tmp_path: Path
) -> None:
    from pipeline.ingest.fetch import FEED, FetchedInput
    from pipeline.ingest.load import ingest
    from pipeline.ingest.readers import parse_csv_text
    from pipeline.ingest.sources import FileSource

    path = _write(tmp_path / "prices.csv", ["AAA,2024-01-02,10", "AAA,2024-01-03,11"])
    url = "https://feed.example/AAA.csv"
    text = "ticker,date,close\nAAA,2024-01-03,11.25\n"

    class Feed:
        def describe(self) -> str:
            return "a feed"

        def fetch(self, context: object) -> object:
            yield FetchedInput(url, FEED, "v1", parse=lambda: parse_csv_text(text, url, url, "v1"))

    with engine.begin() as conn:
        report = ingest(conn, [FileSource([path]), Feed()])

    assert _counts(report) == [("prices.csv", 2, 1, 0, 0, 1), ("AAA.csv", 1, 1, 0, 0, 0)]
    assert len(_prices(engine)) == report.rows_loaded == 2


def _rejected_rows(engine: Engine) -> int:
    from pipeline.db.schema import rejected_prices

    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(rejected_prices)).scalar_one()


def test_a_file_that_is_not_prices_is_rejected_after_its_first_rows(
    engine: Engine, tmp_path: Path
) -> None:
    from pipeline.ingest.readers import PROBE_ROWS

    folder = tmp_path / "drop"
    folder.mkdir()
    write_long_csv(synthetic_prices(("AAA",), days=5), folder / "AAA.csv")
    junk = folder / "junk.csv"
    junk.write_text(
        "ticker,date,close\n"
        + "".join(f"row {n},see the attached,page {n}\n" for n in range(50_000))
    )

    report = _ingest(engine, folder)

    assert [(Path(r.origin).name, r.status, r.rows_read) for r in report.inputs] == [
        ("AAA.csv", "loaded", 5),
        ("junk.csv", "rejected", 0),
    ]
    assert report.inputs[1].error == (
        f"{junk}: not prices: 0 of its first {PROBE_ROWS:,} rows have a whole YYYY-MM-DD date "
        "and a numeric close (line 2 reads 'row 0,see the attached,page 0'); "
        "rejected whole, the rest unread"
    )
    assert _rejected_rows(engine) == 0  # not 50,000 quarantined rows
    with engine.connect() as conn:
        manifest = read_manifest(conn).set_index("origin")
    assert manifest.loc[str(junk), "status"] == "rejected"
    assert manifest.loc[str(junk), "error"].startswith(f"{junk}: not prices: 0 of its first")


def test_junk_without_a_price_header_is_rejected_before_its_rows_are_read(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.ingest.readers as readers

    junk = tmp_path / "server.csv"
    junk.write_text(
        'when,"what happened"\n' + "".join(f'{n},"a ""log"" line"\n' for n in range(20_000))
    )
    monkeypatch.setattr(readers, "_from_rows", None)  # the rows are never split

    (result,) = _ingest(engine, junk).inputs

    assert result.status == "rejected"
    assert result.error == (
        f"{junk}, line 1: no date column (expected one of date, trade_date, datetime, "
        "timestamp); the header is when,what happened"
    )


def test_a_large_file_with_some_prices_among_bad_rows_is_read_row_by_row(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.ingest.readers as readers

    monkeypatch.setattr(readers, "PROBE_ROWS", 20)
    monkeypatch.setattr(readers, "PROBE_MIN_PRICES", 2)
    path = tmp_path / "prices.csv"
    bad = [f"AAA,2024-01-0{n % 9 + 1},n/a" for n in range(18)]
    _write(path, [*bad, "AAA,2024-01-02,10", "AAA,2024-01-03,11", "AAA,2024-01-04,12"])

    (result,) = _ingest(engine, path).inputs

    assert (result.status, result.rows_read, result.rows_loaded) == ("loaded", 21, 3)
    assert result.rows_quarantined == 18


def test_a_parquet_file_that_is_not_prices_is_rejected(engine: Engine, tmp_path: Path) -> None:
    import pipeline.ingest.readers as readers

    path = tmp_path / "junk.parquet"
    pd.DataFrame(
        {"date": ["soon"] * readers.PROBE_ROWS, "close": ["high"] * readers.PROBE_ROWS}
    ).to_parquet(path)

    (result,) = _ingest(engine, path).inputs

    assert result.status == "rejected"
    assert "not prices: 0 of its first" in (result.error or "")
    assert _rejected_rows(engine) == 0


# --- progress of large inputs ----------------------------------------------------------------


def test_a_large_file_logs_its_progress(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import pipeline.ingest.progress as progress

    monkeypatch.setattr(progress, "PROGRESS_ROWS", 10)
    path = write_long_csv(synthetic_prices(("AAA",), days=25), tmp_path / "AAA.csv")
    small = write_long_csv(synthetic_prices(("BBB",), days=5), tmp_path / "BBB.csv")
    caplog.set_level(logging.INFO, logger="pipeline.ingest.load")

    report = _ingest(engine, path, small)

    assert report.rows_loaded == 30
    lines = [r.getMessage() for r in caplog.records if r.message.startswith(str(path))]
    stages = [line.split(": ", 1)[1].split(" rows in ")[0] for line in lines]
    assert stages == [
        "read 25 of 25",
        "validated 25 of 25",
        "upserted 10 of 25",
        "upserted 20 of 25",
        "upserted 25 of 25",
        "done 25 of 25",
    ]
    assert all(line.endswith(" rows/s)") for line in lines)
    assert not [r for r in caplog.records if r.getMessage().startswith(str(small))]


def test_a_slow_input_logs_its_progress_whatever_its_size(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import pipeline.ingest.progress as progress

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)
    path = write_long_csv(synthetic_prices(("AAA",), days=5), tmp_path / "AAA.csv")
    caplog.set_level(logging.INFO, logger="pipeline.ingest.load")

    _ingest(engine, path)

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(str(path))]
    assert [line.split(": ", 1)[1].split(" ")[0] for line in lines] == ["read", "validated", "done"]


def test_spans_and_jumps_against_stored_closes_on_every_engine(
    portable_db_url: str, tmp_path: Path
) -> None:
    """``refresh_date_spans`` (one UPDATE) and ``previous_closes`` (one VALUES query) on
    every engine: each ticker's stored close just before its first valid row of a new
    file is the one its jump is measured from; a bad earlier row of the file does not
    move that point; a ticker never seen before has no jump to measure."""
    from pipeline.db.quarantine import read_flags

    engine = open_database(portable_db_url)
    try:
        _ingest(
            engine,
            _write(
                tmp_path / "prices-1.csv",
                ["AAA,2024-01-02,10", "AAA,2024-01-03,11", "BBB,2024-01-02,50"],
            ),
        )
        _ingest(
            engine,
            _write(
                tmp_path / "prices-2.csv",
                [
                    "AAA,2024-01-01,oops",  # quarantined: not the first valid row
                    "AAA,2024-01-04,22",  # +100% from 11 (2024-01-03)
                    "BBB,2024-01-04,51",  # +2% from 50: no flag
                    "CCC,2024-01-04,7",  # nothing stored before it
                    "CCC,2024-01-05,7.1",
                ],
            ),
        )
        with engine.connect() as conn:
            flags = read_flags(conn)
            universe = {row["symbol"]: row for row in read_tickers(conn)}
        assert flags[["ticker", "trade_date", "flag", "detail"]].values.tolist() == [
            ["AAA", dt.date(2024, 1, 4), "jump", "close moved 100.0% from 11.0"]
        ]
        assert {
            symbol: (row["first_date"], row["last_date"]) for symbol, row in universe.items()
        } == {
            "AAA": (dt.date(2024, 1, 2), dt.date(2024, 1, 4)),
            "BBB": (dt.date(2024, 1, 2), dt.date(2024, 1, 4)),
            "CCC": (dt.date(2024, 1, 4), dt.date(2024, 1, 5)),
        }
    finally:
        engine.dispose()


@pytest.mark.parametrize("days", [1, 40])  # by tickers (a short span), by date range alone
def test_contests_of_a_wide_universe_are_counted_by_either_lookup(
    engine: Engine, tmp_path: Path, days: int
) -> None:
    """600 tickers (over ``_TICKER_FILTER_MAX``): a daily file looks the stored rows up by
    its tickers, a longer one by date range alone; both count the same superseded rows."""
    dates = pd.bdate_range("2024-01-02", periods=days).strftime("%Y-%m-%d")
    symbols = [f"T{index:03d}" for index in range(600)]
    rows = [f"{symbol},{day},10" for symbol in symbols for day in dates]
    later = _write(tmp_path / "prices-2.csv", rows)
    earlier = _write(tmp_path / "prices-1.csv", [row[:-2] + "11" for row in rows])
    _ingest(engine, later)
    report = _ingest(engine, earlier)
    count = 600 * days
    assert _counts(report) == [("prices-1.csv", count, 0, 0, 0, count)]


def test_files_alone_do_not_read_every_ticker_s_newest_date(engine: Engine, tmp_path: Path) -> None:
    """Only feeds read each ticker's newest stored date (a GROUP BY over all of
    ``prices``); an ingest of files does not run that query."""
    path = write_long_csv(synthetic_prices(("AAA", "BBB"), days=5), tmp_path / "p.csv")
    _ingest(engine, path)
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(" ".join(statement.lower().split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        later = write_long_csv(synthetic_prices(("AAA",), days=8), tmp_path / "q.csv")
        assert _ingest(engine, later).rows_read == 8
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    grouped = [s for s in statements if "from prices group by prices.ticker" in s]
    assert statements and not grouped


def test_a_folder_ingested_before_is_judged_unchanged_by_one_manifest_query(
    engine: Engine, tmp_path: Path
) -> None:
    """Rerunning a drop folder of many files already ingested reads the manifest once, not
    once per file (with a savepoint each); a file listed twice in one ingest after it
    changed is loaded once, then judged by its new manifest row; nothing else changes."""
    frame = synthetic_prices(tickers=tuple(f"T{i:02d}" for i in range(12)), days=20)
    folder = tmp_path / "drop"
    folder.mkdir()
    for ticker, rows in frame.groupby(c.TICKER):
        write_long_csv(rows, folder / f"{ticker}.csv")
    first = _ingest(engine, folder)
    assert first.count("loaded") == 12
    before = table_snapshot(engine)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001, ANN002
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        again = _ingest(engine, folder)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert again.count("unchanged") == 12 and again.rows_read == 0
    assert len(statements) < 12, statements
    assert not any("SAVEPOINT" in statement for statement in statements)
    assert table_snapshot(engine) == before

    changed = frame[frame[c.TICKER] == "T00"].copy()
    changed[c.CLOSE] = changed[c.CLOSE] + 1.0
    write_long_csv(changed, folder / "T00.csv")
    twice = _ingest(engine, folder / "T00.csv", folder / "T00.csv")
    assert [result.status for result in twice.inputs] == ["loaded", "unchanged"]
