"""Inputs that fail: what the ingest reports, logs and records in the manifest (a feed
against a real HTTP server on 127.0.0.1, a junk file on disk)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import drop_everything
from http_server import FeedServer, Reply
from sqlalchemy.engine import Engine

from pipeline.db.manifest import read_manifest
from pipeline.db.migrate import open_database
from pipeline.ingest.http import HttpCsvSource
from pipeline.ingest.load import FAILED, LOADED, ingest
from pipeline.ingest.sources import FileSource

AS_OF = dt.date(2024, 1, 5)
GOOD_CSV = "Date,Open,High,Low,Close,Volume\n2024-01-05,10.4,10.7,10.2,10.5,1100\n"
NOW = dt.datetime(2024, 1, 5, 23, 0, tzinfo=dt.UTC)


def test_each_error_names_its_input_once_in_the_summary_and_the_log(
    engine: Engine, feed_server: FeedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected file's error names the file (and line) itself: the summary, which the
    command line prints after ``rejected:``, and the log must not name it again; a failed
    fetch's error does not, so the URL is put before it."""
    junk = tmp_path / "junk.csv"
    junk.write_text("hello\nworld\n")
    feed_server.route("/daily/BBB.csv", Reply(b"oops", status=500, content_type="text/plain"))
    feed = HttpCsvSource(f"{feed_server.base_url}/daily/{{ticker}}.csv", retries=0)
    url = f"{feed_server.base_url}/daily/BBB.csv"
    caplog.set_level(logging.WARNING, logger="pipeline.ingest.load")

    with engine.begin() as conn:
        report = ingest(conn, [FileSource([junk]), feed], as_of=AS_OF, tickers=["BBB"], now=NOW)

    expected = [
        f"{junk}, line 1: no date column (expected one of date, trade_date, datetime, "
        "timestamp); the header is hello",
        f"{url}: HTTP 500 Internal Server Error after 1 attempt",
    ]
    assert report.summary().errors == expected
    assert [r.getMessage() for r in caplog.records if r.name == "pipeline.ingest.load"] == [
        f"rejected whole: {error}" for error in expected
    ]


def test_a_failed_fetch_is_recorded_in_the_manifest_and_the_next_success_loads(
    engine: Engine, feed_server: FeedServer
) -> None:
    feed_server.route(
        "/daily/AAA.csv",
        Reply(b"oops", status=503, content_type="text/plain"),
        Reply(GOOD_CSV.encode()),
    )
    feed = HttpCsvSource(f"{feed_server.base_url}/daily/{{ticker}}.csv", retries=0)
    url = f"{feed_server.base_url}/daily/AAA.csv"

    with engine.begin() as conn:
        first = ingest(conn, [feed], as_of=AS_OF, tickers=["AAA"], run_id="run-1", now=NOW)
    assert [r.status for r in first.inputs] == [FAILED]
    with engine.connect() as conn:
        manifest = read_manifest(conn)
    assert len(manifest) == 1
    row = manifest.iloc[0]
    assert (row["origin"], row["kind"], row["status"], row["run_id"]) == (
        url,
        "feed",
        FAILED,
        "run-1",
    )
    assert row["error"] == f"{url}: HTTP 503 Service Unavailable after 1 attempt"
    counts = ["rows_read", "rows_loaded", "rows_quarantined", "rows_deferred", "rows_superseded"]
    assert row[counts].tolist() == [0, 0, 0, 0, 0]
    assert row["version"] == ""

    with engine.begin() as conn:
        second = ingest(conn, [feed], as_of=AS_OF, tickers=["AAA"], run_id="run-2", now=NOW)
    assert [(r.status, r.rows_loaded) for r in second.inputs] == [(LOADED, 1)]
    with engine.connect() as conn:
        row = read_manifest(conn).iloc[0]
    assert (row["status"], row["error"], row["rows_read"], row["rows_loaded"]) == (
        LOADED,
        None,
        1,
        1,
    )
    assert second.summary().errors == []


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres_server_url", marks=pytest.mark.postgres),
        pytest.param("mariadb_server_url", marks=pytest.mark.mariadb),
    ],
)
def test_the_status_column_says_failed_after_an_upgrade(
    server: str, request: pytest.FixtureRequest
) -> None:
    """Revision 0012_trust_manifest_failed: the comment of ingested_inputs.status names the
    new status, on a database created at the head and on one upgraded from 0011."""
    from alembic import command

    from pipeline.db.migrate import alembic_config

    def comment() -> str | None:
        with engine.connect() as conn:
            columns = sa.inspect(conn).get_columns("ingested_inputs")
        return next(column["comment"] for column in columns if column["name"] == "status")

    engine = open_database(request.getfixturevalue(server))
    try:
        assert comment() == "loaded, rejected (unreadable) or failed (not fetched)."
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0011_rows_superseded")
        assert comment() == "loaded or rejected."
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert comment() == "loaded, rejected (unreadable) or failed (not fetched)."
    finally:
        drop_everything(engine)
        engine.dispose()
