"""The daily-pipeline flow under Prefect's test harness."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import TINY_OVERRIDES as TINY
from helpers import synthetic_prices, table_snapshot, write_long_csv

import flows.daily
from flows.daily import daily_pipeline, scheduled_as_of
from pipeline.db.forecasts import read_forecasts
from pipeline.db.migrate import open_database
from pipeline.files import sha256_file
from pipeline.results import RunSummary


def _run(
    tmp_path: Path,
    source: Path,
    overrides_extra: dict | None = None,
    **params,  # noqa: ANN003
) -> RunSummary:
    return daily_pipeline(
        sources=[str(source)],
        database_url=f"sqlite:///{tmp_path / 'flow.db'}",
        home=str(tmp_path / "home"),
        overrides={**TINY, **(overrides_extra or {})},
        **params,
    )


def test_the_flow_runs_every_stage_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    first = _run(tmp_path, source)
    assert first.as_of == dt.date(2024, 3, 22)  # the newest price
    assert first.ingest.rows_loaded == 120
    assert first.model.action == "retrain" and first.model.model_version == 1
    assert first.forecast.forecasts_written == 10
    engine = open_database(f"sqlite:///{tmp_path / 'flow.db'}")
    before = table_snapshot(engine)
    files = {path: sha256_file(path) for path in (tmp_path / "home").rglob("*") if path.is_file()}

    # Nothing changed: the run stops after ingesting and reports the first run.
    second = _run(tmp_path, source)
    assert second.unchanged is True and first.unchanged is False
    assert second.model == first.model
    assert second.forecast == first.forecast
    assert second.ingest.inputs_unchanged == 1 and second.ingest.rows_loaded == 0
    assert table_snapshot(engine) == before
    assert {p: sha256_file(p) for p in (tmp_path / "home").rglob("*") if p.is_file()} == files

    # Every stage again, by request: the model is reused and nothing changes either.
    third = _run(tmp_path, source, rerun=True)
    assert third.unchanged is False
    assert third.model == first.model.model_copy(
        update={
            "action": "reuse",
            "created": False,
            "reason": third.model.reason,
            # Nothing was fitted this time.
            **dict.fromkeys(("epochs_run", "train_samples", "fit_seconds", "samples_per_second")),
        }
    )
    assert table_snapshot(engine, exclude=("run_states",)) == {
        name: rows for name, rows in before.items() if name != "run_states"
    }
    assert {p: sha256_file(p) for p in (tmp_path / "home").rglob("*") if p.is_file()} == files


def test_a_new_price_or_a_new_setting_runs_every_stage_again(tmp_path: Path) -> None:
    prices = synthetic_prices(("AAA", "BBB"), days=61)
    source = write_long_csv(
        prices[prices["trade_date"] < prices["trade_date"].max()], tmp_path / "p.csv"
    )
    first = _run(tmp_path, source, as_of_date=dt.date(2024, 3, 22))
    assert _run(tmp_path, source, as_of_date=dt.date(2024, 3, 22)).unchanged is True
    # A different horizon is a different run.
    other = _run(tmp_path, source, as_of_date=dt.date(2024, 3, 22), horizon=2)
    assert other.unchanged is False and other.forecast.horizon == 2
    # A corrected file for the same dates: the prices changed, every stage runs.
    corrected = prices[prices["trade_date"] < prices["trade_date"].max()].copy()
    corrected.loc[corrected.index[-1], "close"] *= 1.01
    write_long_csv(corrected, source)
    again = _run(tmp_path, source, as_of_date=dt.date(2024, 3, 22))
    assert again.unchanged is False
    assert again.ingest.rows_loaded > 0
    assert again.forecast.forecasts_written == first.forecast.forecasts_written


def test_an_explicit_as_of_date_and_tickers(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA", "BBB", "CCC"), days=60), tmp_path / "p.csv")
    summary = _run(
        tmp_path,
        source,
        as_of_date=dt.date(2024, 3, 15),
        tickers=["AAA", "CCC"],
        horizon=2,
        mode="retrain",
    )
    assert summary.as_of == dt.date(2024, 3, 15)
    assert summary.forecast.tickers == ["AAA", "CCC"]
    engine = open_database(f"sqlite:///{tmp_path / 'flow.db'}")
    with engine.connect() as conn:
        rows = read_forecasts(conn)
    assert rows["target_date"].tolist() == [dt.date(2024, 3, 18), dt.date(2024, 3, 19)] * 2
    # Files load whole: all three tickers up to the as-of date; the last week is deferred.
    assert (summary.ingest.rows_loaded, summary.ingest.rows_deferred) == (165, 15)


@pytest.mark.parametrize(
    ("auto", "when", "expected"),
    [
        (True, dt.datetime(2024, 3, 22, 22, 30, tzinfo=dt.UTC), dt.date(2024, 3, 22)),
        (True, dt.datetime(2024, 3, 23, 2, 0, tzinfo=dt.UTC), dt.date(2024, 3, 22)),
        # Saturday's retrain and Good Friday's run: the trading day before.
        (True, dt.datetime(2024, 3, 23, 11, 0, tzinfo=dt.UTC), dt.date(2024, 3, 22)),
        (True, dt.datetime(2024, 3, 29, 21, 30, tzinfo=dt.UTC), dt.date(2024, 3, 28)),
        (False, dt.datetime(2024, 3, 22, 22, 30, tzinfo=dt.UTC), None),
    ],
)
def test_scheduled_runs_take_the_last_trading_day_of_their_new_york_date(
    monkeypatch: pytest.MonkeyPatch, auto: bool, when: dt.datetime, expected: dt.date | None
) -> None:
    run = SimpleNamespace(auto_scheduled=auto, expected_start_time=when)
    fake = SimpleNamespace(get=lambda: SimpleNamespace(flow_run=run))
    monkeypatch.setattr(flows.daily, "FlowRunContext", fake)
    assert scheduled_as_of() == expected


def test_stale_tickers_are_reported_and_skipped_or_fail_the_run(tmp_path: Path) -> None:
    from pipeline.errors import StaleDataError

    frame = synthetic_prices(("AAA", "BBB"), days=60)
    frame = frame[~((frame["ticker"] == "BBB") & (frame["trade_date"] > "2024-03-19"))]
    source = write_long_csv(frame, tmp_path / "p.csv")
    summary = _run(tmp_path, source, as_of_date=dt.date(2024, 3, 22))
    assert summary.stale == {"BBB": dt.date(2024, 3, 19)}
    assert summary.forecast.tickers == ["AAA"]
    with pytest.raises(
        StaleDataError, match=r"stale as of 2024-03-22: BBB \(newest 2024-03-19\)"
    ) as failed:
        _run(
            tmp_path,
            source,
            as_of_date=dt.date(2024, 3, 22),
            overrides_extra={"stale_policy": "fail"},
        )
    assert "set PRICECAST_STALE_POLICY=skip" in str(failed.value)  # it would help here
    # Under skip with no fresh ticker, skip cannot help: the message does not advise it.
    with pytest.raises(StaleDataError, match="no ticker is fresh") as nothing_fresh:
        _run(tmp_path, source, as_of_date=dt.date(2024, 3, 26), tickers=["BBB"])
    assert "STALE_POLICY" not in str(nothing_fresh.value)


def test_each_run_publishes_a_forecast_table_and_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    import pipeline.summary

    # Two tickers at most in the artifacts (100 by default), of three forecast.
    monkeypatch.setattr(pipeline.summary, "ARTIFACT_TICKERS", 2)
    source = write_long_csv(synthetic_prices(("AAA", "BBB", "CCC"), days=60), tmp_path / "p.csv")
    summary = _run(tmp_path, source)
    with open_database(f"sqlite:///{tmp_path / 'flow.db'}").connect() as conn:
        written = read_forecasts(conn, summary.as_of)
    nearest = written[written["horizon"] == 1].set_index("ticker")
    widths = (
        (nearest["yhat_upper"].astype(float) - nearest["yhat_lower"].astype(float))
        / nearest["yhat"]
    ).to_dict()
    # Widest first, tickers without an interval (a tiny model's may have none) last.
    missing = {ticker: math.isnan(width) for ticker, width in widths.items()}
    ranked = sorted(widths, key=lambda t: (missing[t], 0.0 if missing[t] else -widths[t], t))
    widest = set(ranked[:2])

    async def latest(key: str):  # noqa: ANN202
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort="CREATED_DESC",
                limit=1,
            )
        return found[0]

    table = asyncio.run(latest("forecasts"))
    markdown = asyncio.run(latest("daily-summary"))
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    # Every step of the two tickers with the widest next-session interval, and it says so.
    assert len(rows) == 10 and {row["ticker"] for row in rows} == widest
    assert "(2 of 3 tickers, those with the widest next-session interval;" in table.description
    assert f"# pricecast as of {summary.as_of}" in markdown.data
    assert "## Model" in markdown.data and "validation MASE" in markdown.data
    # The report's content reaches the UI: the per-ticker table, and where the HTML is.
    report = asyncio.run(latest("report"))
    assert report.type == "markdown"
    assert f"# Forecasts as of {summary.as_of} (model v" in report.data
    for ticker in ("AAA", "BBB", "CCC"):
        assert (f"| {ticker} | 2024-03-25 |" in report.data) == (ticker in widest)
    assert "2 of 3 tickers, those with the widest next-session interval;" in report.data
    assert "nan" not in report.data  # a forecast without an interval reads "-"
    assert f"`{summary.report}` on the machine that ran the flow" in report.data


def test_the_run_writes_the_html_report_and_links_it(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA",), days=60), tmp_path / "p.csv")
    summary = _run(tmp_path, source)
    report = Path(summary.report)
    assert report == tmp_path / "home" / "reports" / f"report-{summary.as_of}.html"
    assert report.read_text().lstrip().lower().startswith("<!doctype html>")


def test_without_a_source_nothing_is_ingested_and_the_run_says_how_to_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.errors import MissingDataError

    monkeypatch.delenv("PRICECAST_SOURCE", raising=False)
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    # An empty database and no source: nothing to forecast, and how to configure one.
    with pytest.raises(MissingDataError, match="no prices; nothing to forecast .no source"):
        daily_pipeline(sources=None, database_url=url, home=str(tmp_path / "home"), overrides=TINY)
    assert "set PRICECAST_SOURCE or pass --source" in caplog.text
    # With prices in the database, a run without a source forecasts from them; the
    # bundled sample's tickers never appear.
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    _run(tmp_path, source)
    again = daily_pipeline(
        sources=None, database_url=url, home=str(tmp_path / "home"), overrides=TINY, rerun=True
    )
    assert again.ingest.inputs == 0 and again.ingest.rows_read == 0
    assert again.forecast.forecasts_written == 10
    engine = open_database(url)
    with engine.connect() as conn:
        tickers = set(read_forecasts(conn, dt.date(2024, 3, 22))["ticker"])
    assert tickers == {"AAA", "BBB"}
