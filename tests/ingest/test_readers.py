"""Reading the three file layouts, and an error naming file and line for each bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import columns as c
from pipeline.errors import InputFileError
from pipeline.ingest.readers import expand_sources, read_price_file, ticker_from_file_name


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_long_csv_with_optional_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "feed.csv",
        "ticker,date,close,open,high,low,adj_close,volume\n"
        "msft,2024-01-03,370.5,371,372,369,370.1,1000\n"
        "AAPL,2024-01-02,185.6,,,,,\n",
    )
    frame = read_price_file(path)
    assert list(frame.columns) == list(c.PRICE_COLUMNS)
    assert frame[c.TICKER].tolist() == ["AAPL", "MSFT"]
    msft = frame.iloc[1]
    assert msft[c.TRADE_DATE] == pd.Timestamp("2024-01-03")
    assert (msft[c.OPEN], msft[c.HIGH], msft[c.LOW], msft[c.CLOSE]) == (371, 372, 369, 370.5)
    assert (msft[c.ADJ_CLOSE], msft[c.VOLUME]) == (370.1, 1000)
    assert np.isnan(frame.iloc[0][c.OPEN])
    assert set(frame[c.SOURCE]) == {"feed.csv"}


def test_seed_single_ticker_csv_takes_the_ticker_from_the_file_name(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "aapl.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2018-01-02,170.16,172.30,169.26,172.26,166.81,25555900\n"
        "2018-01-03,172.53,174.55,171.96,172.23,166.78,29517900\n",
    )
    frame = read_price_file(path)
    assert frame[c.TICKER].tolist() == ["AAPL", "AAPL"]
    assert frame[c.CLOSE].tolist() == [172.26, 172.23]
    assert frame[c.ADJ_CLOSE].tolist() == [166.81, 166.78]
    assert frame[c.VOLUME].tolist() == [25555900, 29517900]


def test_wide_csv_skips_empty_cells(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "wide.csv",
        "date,GOOG,AAPL\n2004-08-18,,1.5\n2004-08-19,50.0,1.6\n",
    )
    frame = read_price_file(path)
    assert list(zip(frame[c.TICKER], frame[c.CLOSE], strict=True)) == [
        ("AAPL", 1.5),
        ("AAPL", 1.6),
        ("GOOG", 50.0),
    ]
    assert frame.loc[frame[c.TICKER] == "GOOG", c.TRADE_DATE].tolist() == [
        pd.Timestamp("2004-08-19")
    ]


def test_gzipped_csv_and_parquet_read_like_csv(tmp_path: Path) -> None:
    text = "symbol,Date,Close\nXOM,2024-02-01,101.5\nXOM,2024-02-02,102.0\n"
    gz = tmp_path / "xom.csv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(text)
    parquet = tmp_path / "xom.parquet"
    pd.DataFrame(
        {
            "ticker": ["XOM", "XOM"],
            "date": pd.to_datetime(["2024-02-01", "2024-02-02"]),
            "close": [101.5, 102.0],
        }
    ).to_parquet(parquet)
    from_gz, from_parquet = read_price_file(gz), read_price_file(parquet)
    for frame in (from_gz, from_parquet):
        assert frame[c.CLOSE].tolist() == [101.5, 102.0]
        assert frame[c.TRADE_DATE].tolist() == list(pd.to_datetime(["2024-02-01", "2024-02-02"]))
    assert ticker_from_file_name(gz) == "XOM"


def test_duplicate_rows_keep_the_last(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dup.csv",
        "ticker,date,close\nAAA,2024-01-02,10\nAAA,2024-01-02,11\n",
    )
    assert read_price_file(path)[c.CLOSE].tolist() == [11.0]


def test_the_bundled_sample_reads(tmp_path: Path) -> None:
    from pipeline.settings import bundled_sample_path

    frame = read_price_file(bundled_sample_path())
    assert sorted(frame[c.TICKER].unique()) == ["AAPL", "AMZN", "GOOG", "JPM", "XOM"]
    assert len(frame) == 5 * 1328


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.csv", "", "empty.csv: the file is empty"),
        ("nodate.csv", "ticker,day,close\nA,2024-01-01,1\n", "no date column"),
        (
            "baddate.csv",
            "ticker,date,close\nAAA,2024-01-02,1\nAAA,2024-13-45,2\n",
            "baddate.csv, line 3: cannot parse date '2024-13-45'",
        ),
        (
            "badnum.csv",
            "ticker,date,close\nAAA,2024-01-02,1\nAAA,2024-01-03,abc\n",
            "badnum.csv, line 3: close 'abc' is not a number",
        ),
        (
            "missing.csv",
            "ticker,date,close\nAAA,2024-01-02,\n",
            "missing.csv, line 2: close is missing",
        ),
        (
            "zero.csv",
            "ticker,date,close\nAAA,2024-01-02,1\nAAA,2024-01-03,0\n",
            "zero.csv, line 3: close '0' is not a positive price",
        ),
        (
            "badticker.csv",
            "ticker,date,close\nA'B,2024-01-02,1\n",
            'badticker.csv, line 2: "A\'B" is not a ticker symbol',
        ),
        (
            "wideheader.csv",
            "date,AAA,bad ticker!\n2024-01-02,1,2\n",
            "wideheader.csv, line 1: column 3 header 'bad ticker!' is not a ticker symbol",
        ),
        ("stock prices.csv", "Date,Close\n2024-01-02,1\n", "must be named after its ticker"),
    ],
)
def test_bad_files_raise_an_error_naming_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(InputFileError) as raised:
        read_price_file(path)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_paths_and_empty_folders_are_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"input file .*nope\.csv does not exist"):
        expand_sources([tmp_path / "nope.csv"])
    with pytest.raises(InputFileError, match="holds no price file"):
        expand_sources([tmp_path])


def test_folders_expand_to_their_price_files_in_name_order(tmp_path: Path) -> None:
    for name in ("b.csv", "a.parquet", "c.csv.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in expand_sources([tmp_path])] == ["a.parquet", "b.csv", "c.csv.gz"]
