"""The Yahoo Finance adapter, with yfinance absent and with a fake yfinance module."""

from __future__ import annotations

import ast
import datetime as dt
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import table_snapshot
from sqlalchemy.engine import Engine

import pipeline.ingest.yahoo as yahoo_module
from pipeline import columns as c
from pipeline.db.prices import read_closes
from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes
from pipeline.ingest.fetch import FEED, FetchContext, FetchedInput
from pipeline.ingest.load import LOADED, ingest
from pipeline.ingest.sources import build_source
from pipeline.ingest.yahoo import YahooSource, history_to_csv

AS_OF = dt.date(2024, 1, 5)  # a Friday


#: Open, high, low, close, adjusted close and volume of five days, as Yahoo gives them.
ROWS = [
    (184.22, 186.74, 183.43, 185.64, 184.08, 82488700),
    (182.15, 184.80, 180.88, 184.25, 182.70, 58414500),
    (181.99, 182.76, 180.17, 181.91, 180.38, 71983600),
    (182.09, 183.09, 180.88, 181.18, 179.66, 62303300),
    (183.92, 185.60, 183.04, 185.56, 184.00, 59144500),
]


def yahoo_history(days: list[str], offset: float = 0.0) -> pd.DataFrame:
    """A frame shaped like ``yfinance.Ticker.history(auto_adjust=False, actions=False)``.

    Daily rows are stamped at midnight in the exchange's time zone; the index is named
    ``Date``; prices are floats and volumes integers.
    """
    index = pd.DatetimeIndex(pd.to_datetime(days), name="Date").tz_localize("America/New_York")
    frame = pd.DataFrame(
        ROWS[: len(days)],
        columns=["Open", "High", "Low", "Close", "Adj Close", "Volume"],
        index=index,
    )
    prices = ["Open", "High", "Low", "Close", "Adj Close"]
    frame[prices] = frame[prices] + offset
    return frame


class FakeYfinance(types.ModuleType):
    """A stand-in for the ``yfinance`` module: ``Ticker(symbol).history(**options)``."""

    def __init__(self, answer: Any) -> None:
        super().__init__("yfinance")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        fake = self

        class Ticker:
            def __init__(self, symbol: str) -> None:
                self.symbol = symbol

            def history(self, **options: Any) -> pd.DataFrame:
                fake.calls.append((self.symbol, options))
                result = answer(self.symbol, options) if callable(answer) else answer
                if isinstance(result, BaseException):
                    raise result
                return result

        self.Ticker = Ticker


@pytest.fixture
def no_yfinance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import yfinance`` fail as it does when the package is not installed."""
    monkeypatch.setitem(sys.modules, "yfinance", None)


def install(monkeypatch: pytest.MonkeyPatch, answer: Any) -> FakeYfinance:
    fake = FakeYfinance(answer)
    monkeypatch.setitem(sys.modules, "yfinance", fake)
    return fake


def fetch(
    tickers: list[str],
    as_of: dt.date | None = AS_OF,
    last_dates: dict[str, dt.date] | None = None,
    source: YahooSource | None = None,
) -> list[FetchedInput]:
    return list((source or YahooSource()).fetch(FetchContext(as_of, tickers, last_dates or {})))


def test_without_yfinance_the_source_says_how_to_install_it(no_yfinance: None) -> None:
    source = build_source("yahoo")  # building it needs nothing
    assert source.describe() == "Yahoo Finance (yfinance)"
    with pytest.raises(ConfigurationError) as raised:
        fetch(["AAPL"])
    assert str(raised.value) == (
        "the yahoo source needs the yfinance package: pip install 'pricecast[yahoo]'"
    )


def test_the_module_imports_yfinance_only_when_fetching() -> None:
    tree = ast.parse(Path(yahoo_module.__file__).read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ] + [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name and name.startswith("yfinance")]


def test_the_history_becomes_single_ticker_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    days = ["2024-01-03", "2024-01-04", "2024-01-05"]
    fake = install(monkeypatch, yahoo_history(days))

    (fetched,) = fetch(["AAPL"], last_dates={"AAPL": dt.date(2024, 1, 2)})

    assert fake.calls == [
        (
            "AAPL",
            {
                "start": "2024-01-03",
                "end": "2024-01-06",  # yfinance's end is exclusive
                "interval": "1d",
                "auto_adjust": False,
                "actions": False,
                "timeout": 10.0,
            },
        )
    ]
    text = (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-03,184.22,186.74,183.43,185.64,184.08,82488700\n"
        "2024-01-04,182.15,184.8,180.88,184.25,182.7,58414500\n"
        "2024-01-05,181.99,182.76,180.17,181.91,180.38,71983600\n"
    )
    origin = "yahoo://AAPL?start=2024-01-03&end=2024-01-05"
    assert (fetched.origin, fetched.kind, fetched.version, fetched.error) == (
        origin,
        FEED,
        sha256_bytes(text.encode()),
        None,
    )
    assert fetched.parse is not None
    batch = fetched.parse()
    assert (batch.origin, batch.source, batch.version, batch.layout) == (
        origin,
        origin,
        sha256_bytes(text.encode()),
        "single",
    )
    assert batch.frame[[c.TICKER, "date", c.CLOSE, c.ADJ_CLOSE, c.VOLUME]].values.tolist() == [
        ["AAPL", "2024-01-03", "185.64", "184.08", "82488700"],
        ["AAPL", "2024-01-04", "184.25", "182.7", "58414500"],
        ["AAPL", "2024-01-05", "181.91", "180.38", "71983600"],
    ]


def test_csv_text_keeps_the_window_and_leaves_missing_values_empty() -> None:
    frame = yahoo_history(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"])
    frame["Volume"] = frame["Volume"].astype(float)
    frame.loc[frame.index[1], "Volume"] = np.nan
    frame.loc[frame.index[1], "Open"] = np.nan

    text = history_to_csv(frame, dt.date(2024, 1, 3), dt.date(2024, 1, 4))

    assert text == (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-03,,184.8,180.88,184.25,182.7,\n"
        "2024-01-04,181.99,182.76,180.17,181.91,180.38,71983600\n"
    )


def test_a_download_style_frame_is_read_by_its_price_level() -> None:
    frame = yahoo_history(["2024-01-02"])
    frame.columns = pd.MultiIndex.from_product([frame.columns, ["AAPL"]], names=["Price", "Ticker"])
    text = history_to_csv(frame, dt.date(2024, 1, 1), None)
    assert text.splitlines() == [
        "Date,Open,High,Low,Close,Adj Close,Volume",
        "2024-01-02,184.22,186.74,183.43,185.64,184.08,82488700",
    ]


def test_an_unreachable_yahoo_is_a_one_line_error_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def answer(symbol: str, options: dict[str, Any]) -> object:
        if symbol == "AAPL":
            return ConnectionError(
                "HTTPSConnectionPool(host='query2.finance.yahoo.com', port=443):\n"
                "Max retries exceeded (Failed to resolve 'query2.finance.yahoo.com')"
            )
        return yahoo_history(["2024-01-05"])

    install(monkeypatch, answer)

    aapl, msft = fetch(["MSFT", "AAPL"], last_dates={"AAPL": dt.date(2024, 1, 4)})

    assert (aapl.origin, aapl.version, aapl.parse) == (
        "yahoo://AAPL?start=2024-01-05&end=2024-01-05",
        "",
        None,
    )
    assert aapl.error == (
        "Yahoo Finance unreachable: ConnectionError: "
        "HTTPSConnectionPool(host='query2.finance.yahoo.com', port=443): "
        "Max retries exceeded (Failed to resolve 'query2.finance.yahoo.com')"
    )
    assert msft.error is None
    assert msft.origin == "yahoo://MSFT?start=2000-01-01&end=2024-01-05"


def test_another_exception_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, KeyError("chart"))
    (fetched,) = fetch(["AAPL"])
    assert fetched.error == "Yahoo Finance failed: KeyError: 'chart'"


def test_an_empty_answer_is_an_error_with_what_yfinance_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, pd.DataFrame(columns=["Open", "High", "Low", "Close", "Volume"]))
    shared = types.ModuleType("yfinance.shared")
    shared._ERRORS = {
        "ZZZZ": "possibly delisted; no price data found (1d 2024-01-02 -> 2024-01-06)"
    }
    monkeypatch.setitem(sys.modules, "yfinance.shared", shared)

    aapl, zzzz = fetch(["ZZZZ", "AAPL"], last_dates={"AAPL": dt.date(2024, 1, 1)})

    assert (zzzz.parse, zzzz.error) == (
        None,
        "Yahoo Finance returned no prices for ZZZZ from 2000-01-01 to 2024-01-05: "
        "possibly delisted; no price data found (1d 2024-01-02 -> 2024-01-06)",
    )
    assert aapl.error == (
        "Yahoo Finance returned no prices for AAPL from 2024-01-02 to 2024-01-05: "
        "an unknown or delisted ticker, a market holiday, or Yahoo Finance unreachable"
    )


def test_up_to_date_tickers_and_weekends_are_not_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch, yahoo_history(["2024-01-05"]))
    saturday, sunday = dt.date(2024, 1, 6), dt.date(2024, 1, 7)

    fetched = fetch(["AAA", "BBB"], sunday, {"AAA": sunday, "BBB": AS_OF})
    assert fetched == []
    fetched = fetch(["AAA"], AS_OF, {"AAA": saturday})
    assert fetched == []
    assert fake.calls == []


def test_without_an_as_of_date_everything_since_the_start_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch, yahoo_history(["2024-01-05"]))
    (fetched,) = fetch(["AAPL"], None, source=YahooSource(start=dt.date(2023, 1, 1), timeout=2))
    assert fetched.origin == "yahoo://AAPL?start=2023-01-01"
    assert [
        (options["start"], options["end"], options["timeout"]) for _, options in fake.calls
    ] == [("2023-01-01", None, 2.0)]


def test_yahoo_prices_go_through_the_ingest_stage(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    install(monkeypatch, lambda symbol, options: yahoo_history(days, float(len(symbol))))

    with engine.begin() as conn:
        report = ingest(conn, [YahooSource()], as_of=AS_OF, tickers=["MSFT", "IBM"])
    before = table_snapshot(engine)
    with engine.begin() as conn:
        again = ingest(conn, [YahooSource()], as_of=AS_OF, tickers=["MSFT", "IBM"])

    assert [(r.origin, r.status, r.rows_loaded) for r in report.inputs] == [
        ("yahoo://IBM?start=2000-01-01&end=2024-01-05", LOADED, 4),
        ("yahoo://MSFT?start=2000-01-01&end=2024-01-05", LOADED, 4),
    ]
    assert again.inputs == []  # up to date through the as-of date
    assert table_snapshot(engine) == before
    with engine.connect() as conn:
        stored = read_closes(conn, AS_OF, ["IBM"])
    assert stored[c.CLOSE].round(2).tolist() == [188.64, 187.25, 184.91, 184.18]


def test_single_precision_quotes_are_written_as_quoted() -> None:
    """Yahoo's chart data is single precision: 172.44 arrives as 172.44000244140625."""
    frame = yahoo_history(["2024-01-02"])
    prices = ["Open", "High", "Low", "Close", "Adj Close"]
    frame[prices] = frame[prices].astype(np.float32).astype(float)
    frame["Adj Close"] = 184.08 * 1.0000001  # adjusted in double precision: kept in full
    assert history_to_csv(frame, dt.date(2024, 1, 1), None).splitlines()[1] == (
        f"2024-01-02,184.22,186.74,183.43,185.64,{184.08 * 1.0000001!r},82488700"
    )


@pytest.mark.parametrize(
    ("limit", "size"),
    [(200, "311 bytes (0.0 MiB)"), (50, "more than 50 bytes")],
    ids=["text over the limit", "rows over the limit"],
)
def test_a_history_over_the_size_limit_is_rejected_naming_its_origin(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, limit: int, size: str
) -> None:
    """yfinance downloads by itself, so what it yields is bounded: the CSV text (or, before
    it is built, its rows at their fewest bytes) against PRICECAST_MAX_INPUT_BYTES."""
    week = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    install(
        monkeypatch,
        lambda symbol, options: yahoo_history(week if symbol == "BIG" else week[-1:]),
    )
    with engine.begin() as conn:
        report = ingest(
            conn, [YahooSource()], as_of=AS_OF, tickers=["BIG", "IBM"], max_input_bytes=limit
        )
    big = "yahoo://BIG?start=2000-01-01&end=2024-01-05"
    assert report.summary().errors[0] == (
        f"{big}: {size}, over the size limit of {limit:,} bytes (PRICECAST_MAX_INPUT_BYTES); "
        "rejected: split the input, or raise the limit"
    )
    statuses = {r.origin: (r.status, r.rows_loaded) for r in report.inputs}
    assert statuses[big] == ("rejected", 0)
    ibm = statuses["yahoo://IBM?start=2000-01-01&end=2024-01-05"]
    assert ibm == (("loaded", 1) if limit == 200 else ("rejected", 0))
    with engine.connect() as conn:
        assert read_closes(conn, AS_OF, ["BIG"]).empty
