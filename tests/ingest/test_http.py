"""The HTTP CSV feed against a real HTTP server on 127.0.0.1, then through the ingest stage."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Callable

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import table_snapshot
from http_server import FeedServer, Reply
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.manifest import read_manifest
from pipeline.db.prices import read_closes
from pipeline.db.quarantine import read_rejected
from pipeline.db.schema import prices
from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes
from pipeline.ingest.batch import BatchRejected
from pipeline.ingest.fetch import FEED, FetchContext, FetchedInput
from pipeline.ingest.http import HttpCsvSource
from pipeline.ingest.load import FAILED, LOADED, ingest
from pipeline.ingest.sources import build_source

AS_OF = dt.date(2024, 1, 5)
HEADER = "Date,Open,High,Low,Close,Volume\n"
#: Tuesday 2 to Friday 5 January 2024, the single-ticker layout free feeds answer in.
GOOD_CSV = HEADER + (
    "2024-01-02,10.0,10.5,9.5,10.2,1000\n"
    "2024-01-03,10.2,10.8,10.1,10.6,1200\n"
    "2024-01-04,10.6,10.9,10.3,10.4,900\n"
    "2024-01-05,10.4,10.7,10.2,10.5,1100\n"
)
#: Seconds: small, so that the tests that time out stay fast.
TIMEOUT = 0.2


def csv_reply(text: str) -> Reply:
    return Reply(text.encode())


def source(server: FeedServer, path: str, **options: object) -> HttpCsvSource:
    settings: dict[str, object] = {"timeout": TIMEOUT, "retries": 1, "backoff": 0.01}
    settings.update(options)
    return HttpCsvSource(server.base_url + path, **settings)  # type: ignore[arg-type]


def fetch(
    feed: HttpCsvSource,
    tickers: list[str],
    as_of: dt.date | None = AS_OF,
    last_dates: dict[str, dt.date] | None = None,
) -> list[FetchedInput]:
    return list(feed.fetch(FetchContext(as_of, tickers, last_dates or {})))


def closes(fetched: FetchedInput) -> list[tuple[str, str, str]]:
    assert fetched.parse is not None, fetched.error
    frame = fetched.parse().frame
    return list(zip(frame[c.TICKER], frame["date"], frame[c.CLOSE], strict=True))


# --- fetch: what the source yields for each kind of answer ---------------------------------


def test_a_good_csv_yields_the_url_its_hash_and_the_rows(feed_server: FeedServer) -> None:
    feed_server.route("/daily/AAA.csv", csv_reply(GOOD_CSV))
    feed_server.route("/daily/BBB.csv", csv_reply(HEADER + "2024-01-02,5,5,5,5,1\n"))
    feed = source(feed_server, "/daily/{ticker}.csv")

    fetched = fetch(feed, ["BBB", "AAA", "BBB"])

    base = feed_server.base_url
    assert [(f.origin, f.kind, f.version, f.error) for f in fetched] == [
        (f"{base}/daily/AAA.csv", FEED, sha256_bytes(GOOD_CSV.encode()), None),
        (
            f"{base}/daily/BBB.csv",
            FEED,
            sha256_bytes(b"Date,Open,High,Low,Close,Volume\n2024-01-02,5,5,5,5,1\n"),
            None,
        ),
    ]
    batch = fetched[0].parse()  # type: ignore[misc]
    assert (batch.origin, batch.source, batch.layout, batch.is_feed) == (
        f"{base}/daily/AAA.csv",
        f"{base}/daily/AAA.csv",
        "single",
        True,
    )
    assert closes(fetched[0]) == [
        ("AAA", "2024-01-02", "10.2"),
        ("AAA", "2024-01-03", "10.6"),
        ("AAA", "2024-01-04", "10.4"),
        ("AAA", "2024-01-05", "10.5"),
    ]
    assert closes(fetched[1]) == [("BBB", "2024-01-02", "5")]
    assert feed.describe() == f"HTTP CSV feed {base}/daily/{{ticker}}.csv"


def test_a_bom_is_dropped(feed_server: FeedServer) -> None:
    feed_server.route("/daily/AAA.csv", Reply(b"\xef\xbb\xbf" + GOOD_CSV.encode()))
    (fetched,) = fetch(source(feed_server, "/daily/{ticker}.csv"), ["AAA"])
    assert closes(fetched)[0] == ("AAA", "2024-01-02", "10.2")


def test_the_ticker_is_url_encoded(feed_server: FeedServer) -> None:
    feed_server.route("/daily/%5EGSPC.csv", csv_reply(HEADER + "2024-01-02,1,1,1,4700.5,0\n"))
    feed_server.route("/daily/BRK.B.csv", csv_reply(HEADER + "2024-01-02,1,1,1,362.1,0\n"))
    feed_server.route("/daily/A%2FB%20C.csv", csv_reply(HEADER + "2024-01-02,1,1,1,1.5,0\n"))

    fetched = fetch(source(feed_server, "/daily/{ticker}.csv"), ["^GSPC", "BRK.B", "A/B C"])

    base = feed_server.base_url
    assert [f.origin for f in fetched] == [
        f"{base}/daily/A%2FB%20C.csv",
        f"{base}/daily/BRK.B.csv",
        f"{base}/daily/%5EGSPC.csv",
    ]
    assert [closes(f) for f in fetched] == [
        [("A/B C", "2024-01-02", "1.5")],
        [("BRK.B", "2024-01-02", "362.1")],
        [("^GSPC", "2024-01-02", "4700.5")],
    ]


def test_a_server_that_does_not_answer_in_time_fails_after_every_attempt(
    feed_server: FeedServer,
) -> None:
    feed_server.route("/slow/AAA.csv", Reply(GOOD_CSV.encode(), delay=3 * TIMEOUT))
    started = time.monotonic()

    (fetched,) = fetch(source(feed_server, "/slow/{ticker}.csv", retries=1), ["AAA"])

    assert (fetched.origin, fetched.version, fetched.parse, fetched.error) == (
        f"{feed_server.base_url}/slow/AAA.csv",
        "",
        None,
        "timed out after 2 attempts",
    )
    assert len(feed_server.requests_to("/slow/AAA.csv")) == 2
    assert time.monotonic() - started < 2


def test_a_server_error_is_retried_then_reported(feed_server: FeedServer) -> None:
    feed_server.route("/broken/AAA.csv", Reply(b"oops", status=500, content_type="text/plain"))

    (fetched,) = fetch(source(feed_server, "/broken/{ticker}.csv", retries=2), ["AAA"])

    assert (fetched.origin, fetched.parse, fetched.error) == (
        f"{feed_server.base_url}/broken/AAA.csv",
        None,
        "HTTP 500 Internal Server Error after 3 attempts",
    )
    assert len(feed_server.requests_to("/broken/AAA.csv")) == 3


@pytest.mark.parametrize(
    "failure",
    [
        Reply(b"oops", status=500, content_type="text/plain"),
        Reply(b"busy", status=503, content_type="text/plain"),
        Reply(b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "0"}),
        Reply(GOOD_CSV.encode()[:40], content_length=len(GOOD_CSV)),
    ],
    ids=["500", "503", "429", "truncated"],
)
def test_a_failure_that_goes_away_is_retried(
    feed_server: FeedServer, failure: Reply, caplog: pytest.LogCaptureFixture
) -> None:
    feed_server.route("/flaky/AAA.csv", failure, csv_reply(GOOD_CSV))
    caplog.set_level(logging.DEBUG, logger="pipeline.ingest.http")

    (fetched,) = fetch(source(feed_server, "/flaky/{ticker}.csv"), ["AAA"])

    assert fetched.error is None
    assert fetched.version == sha256_bytes(GOOD_CSV.encode())
    assert len(closes(fetched)) == 4
    assert len(feed_server.requests_to("/flaky/AAA.csv")) == 2
    url = f"{feed_server.base_url}/flaky/AAA.csv"
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert logged[0] == (logging.DEBUG, f"GET {url}")
    assert logged[1][0] == logging.WARNING
    assert logged[1][1].startswith(f"{url}: ")
    assert logged[1][1].endswith("; retrying in 0.01 s (attempt 2 of 2)")
    assert logged[2] == (logging.DEBUG, f"GET {url}")


def test_a_truncated_body_is_detected_and_reported(feed_server: FeedServer) -> None:
    body = GOOD_CSV.encode()
    feed_server.route("/cut/AAA.csv", Reply(body[:40], content_length=len(body)))

    (fetched,) = fetch(source(feed_server, "/cut/{ticker}.csv"), ["AAA"])

    assert fetched.parse is None
    assert fetched.error is not None
    assert fetched.error.startswith("the response was cut short (")
    assert f"received 40 bytes, expected {len(body)}" in fetched.error
    assert fetched.error.endswith(") after 2 attempts")
    assert "\n" not in fetched.error
    assert len(feed_server.requests_to("/cut/AAA.csv")) == 2


def test_a_404_means_an_unknown_ticker_and_is_not_retried(feed_server: FeedServer) -> None:
    (fetched,) = fetch(source(feed_server, "/daily/{ticker}.csv", retries=3), ["ZZZ"])

    assert (fetched.origin, fetched.parse, fetched.error) == (
        f"{feed_server.base_url}/daily/ZZZ.csv",
        None,
        "HTTP 404 Not Found; not retried (does the feed know the ticker 'ZZZ'?)",
    )
    assert len(feed_server.requests_to("/daily/ZZZ.csv")) == 1


def test_a_refused_connection_is_reported(feed_server: FeedServer) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    feed = HttpCsvSource(
        f"http://127.0.0.1:{port}/{{ticker}}.csv", timeout=TIMEOUT, retries=1, backoff=0.01
    )

    (fetched,) = fetch(feed, ["AAA"])

    assert fetched.error is not None
    assert fetched.error.startswith("connection failed (")
    assert fetched.error.endswith(") after 2 attempts")


def test_an_html_page_is_rejected_when_parsed(feed_server: FeedServer) -> None:
    page = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
    feed_server.route("/daily/AAA.csv", Reply(page, content_type="text/html; charset=utf-8"))
    feed_server.route("/daily/BBB.csv", Reply(page, content_type="text/csv"))

    aaa, bbb = fetch(source(feed_server, "/daily/{ticker}.csv"), ["AAA", "BBB"])

    assert (aaa.error, aaa.version) == (None, sha256_bytes(page))
    with pytest.raises(BatchRejected) as rejected:
        aaa.parse()  # type: ignore[misc]
    assert str(rejected.value) == (
        f"{aaa.origin}: the feed answered with an HTML page (Content-Type text/html), not CSV"
    )
    with pytest.raises(BatchRejected) as rejected:
        bbb.parse()  # type: ignore[misc]
    assert str(rejected.value) == f"{bbb.origin}, line 1: the input is an HTML page, not CSV"


def test_an_html_content_type_is_rejected_even_when_the_body_looks_like_csv(
    feed_server: FeedServer,
) -> None:
    feed_server.route("/daily/AAA.csv", Reply(GOOD_CSV.encode(), content_type="text/html"))
    (fetched,) = fetch(source(feed_server, "/daily/{ticker}.csv"), ["AAA"])
    with pytest.raises(BatchRejected, match=r"Content-Type text/html\), not CSV"):
        fetched.parse()  # type: ignore[misc]


def test_bytes_that_are_not_utf8_are_rejected_naming_the_url_and_line(
    feed_server: FeedServer,
) -> None:
    body = (HEADER + "2024-01-02,1,1,1,1,1\n2024-01-03,1,1,1,").encode() + b"\xff\xfe2\n"
    feed_server.route("/daily/AAA.csv", Reply(body))
    (fetched,) = fetch(source(feed_server, "/daily/{ticker}.csv"), ["AAA"])
    with pytest.raises(BatchRejected) as rejected:
        fetched.parse()  # type: ignore[misc]
    assert str(rejected.value) == (
        f"{fetched.origin}, line 3: the response is not UTF-8 text (byte 0xff)"
    )


def test_a_body_that_is_not_csv_is_rejected(feed_server: FeedServer) -> None:
    feed_server.route("/daily/AAA.csv", Reply(b'{"error": "no such ticker"}'))
    (fetched,) = fetch(source(feed_server, "/daily/{ticker}.csv"), ["AAA"])
    with pytest.raises(BatchRejected, match="line 1: no date column"):
        fetched.parse()  # type: ignore[misc]


# --- the window asked for -------------------------------------------------------------------


def test_incremental_fetching_asks_from_the_day_after_the_last_stored_date(
    feed_server: FeedServer,
) -> None:
    feed_server.route("/range", csv_reply(HEADER))
    feed = source(
        feed_server,
        "/range?s={ticker}&from={start}&to={end}&d1={start:%Y%m%d}",
        start=dt.date(2020, 1, 1),
    )
    last_dates = {
        "AAA": dt.date(2024, 1, 3),  # asks from the 4th
        "CCC": AS_OF,  # up to date: no request
        "DDD": dt.date(2024, 1, 8),  # newer than the as-of date: no request
    }

    fetched = fetch(feed, ["AAA", "BBB", "CCC", "DDD"], AS_OF, last_dates)

    assert [request.query for request in feed_server.requests] == [
        {"s": "AAA", "from": "2024-01-04", "to": "2024-01-05", "d1": "20240104"},
        {"s": "BBB", "from": "2020-01-01", "to": "2024-01-05", "d1": "20200101"},
    ]
    base = feed_server.base_url
    assert [f.origin for f in fetched] == [
        f"{base}/range?s=AAA&from=2024-01-04&to=2024-01-05&d1=20240104",
        f"{base}/range?s=BBB&from=2020-01-01&to=2024-01-05&d1=20200101",
    ]
    assert [closes(f) for f in fetched] == [[], []]


def test_a_template_without_a_start_is_skipped_when_up_to_date(feed_server: FeedServer) -> None:
    feed_server.route("/daily/AAA.csv", csv_reply(GOOD_CSV))
    fetched = fetch(source(feed_server, "/daily/{ticker}.csv"), ["AAA"], AS_OF, {"AAA": AS_OF})
    assert fetched == []
    assert feed_server.requests == []


def test_without_an_as_of_date_a_template_without_end_asks_for_everything(
    feed_server: FeedServer,
) -> None:
    feed_server.route("/since", csv_reply(GOOD_CSV))
    feed = source(feed_server, "/since?s={ticker}&from={start}")

    (fetched,) = fetch(feed, ["AAA"], None, {"AAA": dt.date(2030, 1, 1)})

    assert fetched.error is None
    assert [request.query for request in feed_server.requests] == [
        {"s": "AAA", "from": "2030-01-02"}
    ]


def test_a_template_with_end_needs_an_as_of_date(feed_server: FeedServer) -> None:
    feed = source(feed_server, "/range?s={ticker}&to={end}")
    with pytest.raises(
        ConfigurationError, match=r"has an \{end\} placeholder, so it needs an as-of"
    ):
        fetch(feed, ["AAA"], None)
    assert feed_server.requests == []


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("http://feed.invalid/prices.csv", r"needs a \{ticker\} placeholder"),
        ("http://feed.invalid/{symbol}.csv", r"needs a \{ticker\} placeholder"),
        ("http://feed.invalid/{ticker}/{since}.csv", r"unknown placeholders \{since\}"),
        ("http://feed.invalid/{ticker}.csv?x={", "not a valid URL template"),
    ],
)
def test_a_bad_template_is_a_configuration_error(template: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        HttpCsvSource(template)


def test_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="timeout must be positive"):
        HttpCsvSource("http://feed.invalid/{ticker}", timeout=0)
    with pytest.raises(ConfigurationError, match="retries must be 0 or more"):
        HttpCsvSource("http://feed.invalid/{ticker}", retries=-1)


def test_retries_zero_means_one_attempt(feed_server: FeedServer) -> None:
    feed_server.route("/broken/AAA.csv", Reply(b"oops", status=502, content_type="text/plain"))
    (fetched,) = fetch(source(feed_server, "/broken/{ticker}.csv", retries=0), ["AAA"])
    assert fetched.error == "HTTP 502 Bad Gateway after 1 attempt"
    assert len(feed_server.requests_to("/broken/AAA.csv")) == 1


# --- through the ingest stage ---------------------------------------------------------------


def stored_rows(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                prices.c.ticker, prices.c.trade_date, prices.c.close, prices.c.source
            ).order_by(prices.c.ticker, prices.c.trade_date)
        ).all()
    return [tuple(row) for row in rows]


def test_a_good_ticker_loads_while_another_fails(engine: Engine, feed_server: FeedServer) -> None:
    feed_server.route("/daily/AAA.csv", csv_reply(GOOD_CSV))
    feed_server.route("/daily/BBB.csv", Reply(b"oops", status=500, content_type="text/plain"))
    feed = source(feed_server, "/daily/{ticker}.csv")

    with engine.begin() as conn:
        report = ingest(conn, [feed], as_of=AS_OF, tickers=["AAA", "BBB"], run_id="run-1")

    aaa_url = f"{feed_server.base_url}/daily/AAA.csv"
    bbb_url = f"{feed_server.base_url}/daily/BBB.csv"
    assert [
        (r.origin, r.kind, r.status, r.rows_read, r.rows_loaded, r.error) for r in report.inputs
    ] == [
        (aaa_url, FEED, LOADED, 4, 4, None),
        (bbb_url, FEED, FAILED, 0, 0, "HTTP 500 Internal Server Error after 2 attempts"),
    ]
    assert report.summary().errors == [
        f"{bbb_url}: HTTP 500 Internal Server Error after 2 attempts"
    ]
    with engine.connect() as conn:
        stored = read_closes(conn, AS_OF)
    assert list(stored.itertuples(index=False, name=None)) == [
        ("AAA", dt.date(2024, 1, 2), 10.2),
        ("AAA", dt.date(2024, 1, 3), 10.6),
        ("AAA", dt.date(2024, 1, 4), 10.4),
        ("AAA", dt.date(2024, 1, 5), 10.5),
    ]
    assert {row[3] for row in stored_rows(engine)} == {aaa_url}


def test_bad_rows_of_a_good_response_are_quarantined_with_the_url(
    engine: Engine, feed_server: FeedServer
) -> None:
    body = HEADER + (
        "2024-01-02,10.0,10.5,9.5,10.2,1000\n"
        "2024-01-03,10.2,10.8,10.1,0,1200\n"
        "2024-13-04,10.6,10.9,10.3,10.4,900\n"
        "2024-01-05,10.4,10.7,10.2,10.5,1100\n"
    )
    feed_server.route("/daily/AAA.csv", csv_reply(body))
    url = f"{feed_server.base_url}/daily/AAA.csv"

    with engine.begin() as conn:
        report = ingest(
            conn, [source(feed_server, "/daily/{ticker}.csv")], as_of=AS_OF, tickers=["AAA"]
        )

    (result,) = report.inputs
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (4, 2, 2)
    with engine.connect() as conn:
        rejected = read_rejected(conn)
        stored = read_closes(conn, AS_OF)
    assert list(
        rejected[
            ["source", "source_version", "line", "ticker", "trade_date", "reason_code"]
        ].itertuples(index=False, name=None)
    ) == [
        (url, sha256_bytes(body.encode()), 3, "AAA", "2024-01-03", "not_positive"),
        (url, sha256_bytes(body.encode()), 4, "AAA", "2024-13-04", "date"),
    ]
    assert rejected["raw"].iloc[0]["Close"] == "0"
    assert stored["trade_date"].tolist() == [dt.date(2024, 1, 2), dt.date(2024, 1, 5)]


def _range_feed(rows: str) -> Callable[[dict[str, str]], Reply]:
    """Answer ``?from=&to=`` with the rows of ``rows`` in that window, as a feed would."""
    lines = [line for line in rows.splitlines() if line]

    def reply(query: dict[str, str]) -> Reply:
        start = dt.date.fromisoformat(query["from"])
        end = dt.date.fromisoformat(query["to"])
        kept = [line for line in lines if start <= dt.date.fromisoformat(line.split(",")[0]) <= end]
        return csv_reply(HEADER + "".join(line + "\n" for line in kept))

    return reply


@pytest.mark.parametrize(
    ("path", "as_of", "second_statuses", "requests"),
    [
        # The same URL answers the same body: the manifest skips it.
        ("/full/{ticker}.csv", dt.date(2024, 1, 8), ["unchanged"], 2),
        # Up to date through the as-of date: nothing is asked the second time.
        ("/range?s={ticker}&from={start}&to={end}", AS_OF, [], 1),
    ],
    ids=["whole-history", "incremental"],
)
def test_a_second_ingest_with_the_same_answers_changes_nothing(
    engine: Engine,
    feed_server: FeedServer,
    path: str,
    as_of: dt.date,
    second_statuses: list[str],
    requests: int,
) -> None:
    feed_server.route("/full/AAA.csv", csv_reply(GOOD_CSV))
    feed_server.route_by_query("/range", _range_feed(GOOD_CSV.removeprefix(HEADER)))
    feed = source(feed_server, path)

    with engine.begin() as conn:
        first = ingest(conn, [feed], as_of=as_of, tickers=["AAA"])
    before = table_snapshot(engine)
    with engine.begin() as conn:
        second = ingest(conn, [feed], as_of=as_of, tickers=["AAA"])

    assert table_snapshot(engine) == before
    assert [(r.status, r.rows_loaded) for r in first.inputs] == [(LOADED, 4)]
    assert [r.status for r in second.inputs] == second_statuses
    assert len(feed_server.requests) == requests


def test_an_incremental_rerun_after_a_quiet_day_loads_nothing_new(
    engine: Engine, feed_server: FeedServer
) -> None:
    feed_server.route_by_query("/range", _range_feed(GOOD_CSV.removeprefix(HEADER)))
    feed = source(feed_server, "/range?s={ticker}&from={start}&to={end}")
    monday = dt.date(2024, 1, 8)  # the feed has nothing after Friday the 5th yet

    with engine.begin() as conn:
        ingest(conn, [feed], as_of=monday, tickers=["AAA"])
    before = table_snapshot(engine)
    with engine.begin() as conn:
        second = ingest(conn, [feed], as_of=monday, tickers=["AAA"])
    after_second = table_snapshot(engine)
    with engine.begin() as conn:
        third = ingest(conn, [feed], as_of=monday, tickers=["AAA"])

    assert [request.query["from"] for request in feed_server.requests] == [
        "2000-01-01",
        "2024-01-06",
        "2024-01-06",
    ]
    assert [(r.status, r.rows_read) for r in second.inputs] == [(LOADED, 0)]
    assert [r.status for r in third.inputs] == ["unchanged"]
    # The second run records the new window it asked for in the manifest, and nothing else.
    assert {name: rows for name, rows in after_second.items() if name != "ingested_inputs"} == {
        name: rows for name, rows in before.items() if name != "ingested_inputs"
    }
    with engine.connect() as conn:
        manifest = read_manifest(conn)
    assert sorted(zip(manifest["origin"], manifest["rows_read"], strict=True)) == [
        (f"{feed_server.base_url}/range?s=AAA&from=2000-01-01&to=2024-01-08", 4),
        (f"{feed_server.base_url}/range?s=AAA&from=2024-01-06&to=2024-01-08", 0),
    ]
    assert table_snapshot(engine) == after_second
    assert pd.Timestamp(max(row[1] for row in stored_rows(engine))).date() == AS_OF


def test_build_source_makes_an_http_feed_with_its_options() -> None:
    feed = build_source(
        "https://feed.invalid/q/d/l/?s={ticker}&d1={start:%Y%m%d}&d2={end:%Y%m%d}",
        http_options={"timeout": 2.5, "retries": 0, "backoff": 0.0},
    )
    assert isinstance(feed, HttpCsvSource)
    assert (feed.timeout, feed.retries, feed.backoff) == (2.5, 0, 0.0)
    assert feed.url("^GSPC", dt.date(2024, 1, 2), AS_OF) == (
        "https://feed.invalid/q/d/l/?s=%5EGSPC&d1=20240102&d2=20240105"
    )


# --- size: a body over the limit is cut off -------------------------------------------------


def test_a_body_declared_over_the_limit_is_rejected_unread(
    engine: Engine, feed_server: FeedServer
) -> None:
    feed_server.route("/big/AAA.csv", csv_reply(GOOD_CSV))
    feed_server.route("/big/BBB.csv", csv_reply(HEADER + "2024-01-02,5,5,5,5,1\n"))
    limit = len(GOOD_CSV) - 1

    with engine.begin() as conn:
        report = ingest(
            conn,
            [source(feed_server, "/big/{ticker}.csv")],
            as_of=AS_OF,
            tickers=["AAA", "BBB"],
            max_input_bytes=limit,
        )

    url = f"{feed_server.base_url}/big/AAA.csv"
    aaa, bbb = report.inputs
    assert (aaa.status, aaa.rows_read, bbb.status, bbb.rows_loaded) == ("rejected", 0, LOADED, 1)
    assert aaa.error == (
        f"{url}: {len(GOOD_CSV)} bytes (0.0 MiB), over the size limit of {limit} bytes "
        "(PRICECAST_MAX_INPUT_BYTES); rejected unread: split the input, or raise the limit"
    )
    assert len(feed_server.requests_to("/big/AAA.csv")) == 1  # not retried
    assert report.summary().inputs_rejected == 1
    with engine.connect() as conn:
        manifest = read_manifest(conn).set_index("origin")
    assert manifest.loc[url, "status"] == "rejected"
    assert "PRICECAST_MAX_INPUT_BYTES" in manifest.loc[url, "error"]


def test_a_body_without_a_length_is_cut_off_at_the_limit(feed_server: FeedServer) -> None:
    body = (HEADER + "2024-01-02,10.0,10.5,9.5,10.2,1000\n" * 200_000).encode()  # 7 MB
    feed_server.route("/stream/AAA.csv", Reply(body, content_length=-1))
    feed = source(feed_server, "/stream/{ticker}.csv", timeout=5)

    started = time.monotonic()
    (fetched,) = list(feed.fetch(FetchContext(AS_OF, ["AAA"], {}, max_input_bytes=100_000)))

    assert time.monotonic() - started < 5
    assert fetched.error is None and fetched.parse is not None
    with pytest.raises(BatchRejected) as raised:
        fetched.parse()
    assert raised.value.problem == (
        "more than 100,000 bytes, over the size limit of 100,000 bytes "
        "(PRICECAST_MAX_INPUT_BYTES); stopped reading there: split the input, or raise the limit"
    )


def test_a_compressed_body_is_limited_by_its_decoded_size(feed_server: FeedServer) -> None:
    import gzip

    text = (HEADER + "2024-01-02,10.0,10.5,9.5,10.2,1000\n" * 50_000).encode()
    packed = gzip.compress(text)
    assert len(packed) < 100_000 < len(text)
    feed_server.route("/gz/AAA.csv", Reply(packed, headers={"Content-Encoding": "gzip"}))
    feed = source(feed_server, "/gz/{ticker}.csv")

    (small,) = list(feed.fetch(FetchContext(AS_OF, ["AAA"], {}, max_input_bytes=100_000)))
    (enough,) = list(feed.fetch(FetchContext(AS_OF, ["AAA"], {}, max_input_bytes=len(text))))

    with pytest.raises(BatchRejected, match="stopped reading there"):
        small.parse()  # type: ignore[misc]
    assert enough.parse().rows == 50_000  # type: ignore[misc]
