"""Reading the three layouts into raw batches, and whole inputs that cannot be read."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import columns as c
from pipeline.errors import InputFileError
from pipeline.ingest.batch import DATE, LINE, RAW, SHAPE_ERROR, BatchRejected
from pipeline.ingest.readers import (
    expand_sources,
    parse_csv_text,
    read_file_batch,
    ticker_from_file_name,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(batch) -> list[tuple]:  # noqa: ANN001
    frame = batch.frame
    return list(zip(frame[LINE], frame[c.TICKER], frame[DATE], frame[c.CLOSE], strict=True))


def test_long_csv_keeps_text_lines_and_raw_fields(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "feed.csv",
        "ticker,date,close,open,high,low,adj_close,volume\n"
        "msft,2024-01-03,370.5,371,372,369,370.1,1000\n"
        "\n"
        "AAPL,2024-01-02,185.6,,,,,\n",
    )
    batch = read_file_batch(path)
    assert (batch.layout, batch.source, batch.origin) == ("long", "feed.csv", str(path))
    assert _rows(batch) == [(2, "msft", "2024-01-03", "370.5"), (4, "AAPL", "2024-01-02", "185.6")]
    first = batch.frame.iloc[0]
    assert (first[c.OPEN], first[c.HIGH], first[c.LOW]) == ("371", "372", "369")
    assert (first[c.ADJ_CLOSE], first[c.VOLUME]) == ("370.1", "1000")
    assert first[RAW]["ticker"] == "msft"
    assert len(batch.version) == 64


def test_seed_single_ticker_csv_takes_the_ticker_from_the_file_name(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "aapl.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2018-01-02,170.16,172.30,169.26,172.26,166.81,25555900\n",
    )
    batch = read_file_batch(path)
    assert batch.layout == "single"
    assert _rows(batch) == [(2, "AAPL", "2018-01-02", "172.26")]
    assert batch.frame.iloc[0][c.ADJ_CLOSE] == "166.81"


def test_wide_csv_makes_one_row_per_traded_cell(tmp_path: Path) -> None:
    path = _write(tmp_path / "wide.csv", "date,GOOG,AAPL\n2004-08-18,,1.5\n2004-08-19,50.0,1.6\n")
    batch = read_file_batch(path)
    assert batch.layout == "wide"
    assert _rows(batch) == [
        (2, "AAPL", "2004-08-18", "1.5"),
        (3, "GOOG", "2004-08-19", "50.0"),
        (3, "AAPL", "2004-08-19", "1.6"),
    ]
    assert batch.frame.iloc[1][RAW] == {"date": "2004-08-19", "GOOG": "50.0"}


def test_short_and_long_lines_are_marked_not_dropped(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ragged.csv", "ticker,date,close\nAAA,2024-01-02\nAAA,2024-01-03,1,2\n"
    )
    frame = read_file_batch(path).frame
    assert frame[SHAPE_ERROR].tolist() == [
        "expected 3 fields, found 2",
        "expected 3 fields, found 4",
    ]


def test_gzipped_csv_and_parquet_read_like_csv(tmp_path: Path) -> None:
    gz = tmp_path / "xom.csv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write("symbol,Date,Close\nXOM,2024-02-01,101.5\n")
    parquet = tmp_path / "xom.parquet"
    pd.DataFrame(
        {"ticker": ["XOM"], "date": pd.to_datetime(["2024-02-01"]), "close": [101.5]}
    ).to_parquet(parquet)
    assert _rows(read_file_batch(gz)) == [(2, "XOM", "2024-02-01", "101.5")]
    assert _rows(read_file_batch(parquet)) == [(1, "XOM", "2024-02-01", "101.5")]
    assert ticker_from_file_name(gz) == "XOM"


def test_the_bundled_sample_reads() -> None:
    from pipeline.settings import bundled_sample_path

    batch = read_file_batch(bundled_sample_path())
    assert sorted(batch.frame[c.TICKER].unique()) == ["AAPL", "AMZN", "GOOG", "JPM", "XOM"]
    assert batch.rows == 5 * 1328


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty.csv: the input is empty"),
        (
            "nodate.csv",
            b"ticker,day,close\nA,2024-01-01,1\n",
            "nodate.csv, line 1: no date column",
        ),
        (
            "page.csv",
            b"<!DOCTYPE html><html><body>Not found</body></html>",
            "line 1: the input is an HTML page",
        ),
        ("binary.csv", b"date,close\n2024-01-02,1\n\xff\xfe\x00", "line 3: not UTF-8 text"),
        (
            "nul.csv",
            b"ticker,date,close\nA,2024-01-02,1\x00\n",
            "line 2: the input holds NUL bytes",
        ),
        ("noclose.csv", b"ticker,date,open\nA,2024-01-02,1\n", "line 1: no close column"),
        (
            "twice.csv",
            b"ticker,date,close,Close\nA,2024-01-02,1,9\n",
            "line 1: the header names 'close' twice (columns 3 and 4)",
        ),
        (
            "widetwice.csv",
            b"date,AAA,aaa\n2024-01-02,1,9\n",
            "line 1: the header names 'aaa' twice (columns 2 and 3)",
        ),
        ("stock prices.csv", b"Date,Close\n2024-01-02,1\n", "must be named after its ticker"),
        ("broken.csv.gz", b"\x1f\x8b\x08not gzip", "not a readable gzip file"),
        ("broken.parquet", b"PAR1 not parquet", "not a readable Parquet file"),
    ],
)
def test_inputs_that_cannot_be_read_are_rejected_whole_naming_file_and_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BatchRejected) as raised:
        read_file_batch(path)
    text = str(raised.value)
    assert text.startswith(str(path))
    assert message in text
    assert "\n" not in text


def test_csv_text_from_a_feed_takes_the_given_ticker() -> None:
    batch = parse_csv_text(
        "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1.5,10\n",
        "https://example/x?s=^GSPC",
        "https://example/x?s=^GSPC",
        "v",
        ticker="^GSPC",
    )
    assert batch.is_feed
    assert _rows(batch) == [(2, "^GSPC", "2024-01-02", "1.5")]


def test_missing_paths_are_errors_and_folders_expand_in_name_order(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"input file .*nope\.csv does not exist"):
        expand_sources([tmp_path / "nope.csv"])
    with pytest.raises(InputFileError, match="/dev/null is neither a file nor a folder"):
        expand_sources(["/dev/null"])
    for name in ("b.csv", "a.parquet", "c.csv.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in expand_sources([tmp_path])] == ["a.parquet", "b.csv", "c.csv.gz"]
    assert expand_sources([tmp_path / "notes.txt"]) == [tmp_path / "notes.txt"]


def test_a_float32_parquet_column_reads_as_the_shortest_text(tmp_path: Path) -> None:
    parquet = tmp_path / "aapl.parquet"
    pd.DataFrame(
        {
            "ticker": ["AAPL", "AAPL"],
            "date": pd.to_datetime(["2018-04-10", "2018-04-11"]),
            "close": np.array([172.44, np.nan], dtype=np.float32),
        }
    ).to_parquet(parquet)
    assert _rows(read_file_batch(parquet)) == [
        (1, "AAPL", "2018-04-10", "172.44"),
        (2, "AAPL", "2018-04-11", ""),
    ]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("long.csv", "ticker,date,close,volume\nAAA,2024-01-02,1.5,10\nBBB,2024-01-02,2,\n"),
        ("crlf.csv", "symbol,Date,Close\r\nAAA, 2024-01-02 ,1.5\r\nAAA,2024-01-03,1.6"),
        (
            "misshapen.csv",
            "ticker,date,close\nAAA,2024-01-02,1.5\nAAA,2024-01-03\nAAA,2024-01-04,1,9\n  \n"
            "AAA,2024-01-05,1.7\n",
        ),
        ("XOM.csv", "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,0.5,1.5,1.4,7\n"),
        ("header_only.csv", "ticker,date,close\n"),
        # white space to trim: a tab (ASCII), no-break and em spaces (not ASCII)
        ("tab.csv", "ticker,date,close\nAAA,2024-01-02,\t1.5\n"),
        ("unicode.csv", "ticker,date,close\nAAA,2024-01-02,\u00a01.5\u2003\n"),
    ],
)
def test_the_fast_reader_reads_what_the_row_by_row_reader_reads(
    name: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow's reader (``_arrow_batch``) and the csv module's give the same rows, lines,
    shape errors and original fields (the fast one builds those for asked rows only)."""
    from pipeline.ingest import readers

    fast = readers.parse_csv_text(text, name, name, "v")
    assert fast.fields is not None  # the fast path was taken
    monkeypatch.setattr(readers, "_arrow_batch", lambda *args: None)
    slow = readers.parse_csv_text(text, name, name, "v")
    assert slow.fields is None
    columns = [column for column in fast.frame.columns if column != RAW]
    pd.testing.assert_frame_equal(
        fast.frame[columns].reset_index(drop=True),
        slow.frame[columns].reset_index(drop=True),
        check_dtype=False,
    )
    positions = np.arange(fast.rows)

    def stripped(rows: list[dict]) -> list[dict]:
        return [{key: value.strip() for key, value in row.items()} for row in rows]

    assert stripped(fast.raw_of(positions)) == stripped(slow.raw_of(positions))


def test_quotes_blank_lines_and_wide_files_take_the_row_by_row_reader() -> None:
    for text in (
        'ticker,date,close\n"AAA",2024-01-02,1.5\n',
        "ticker,date,close\n\nAAA,2024-01-02,1.5\n",
        "date,AAA,BBB\n2024-01-02,1.5,2\n",
    ):
        assert parse_csv_text(text, "x.csv", "x.csv", "v").fields is None
