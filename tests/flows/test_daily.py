"""The daily-pipeline flow under Prefect's test harness."""

from __future__ import annotations

import datetime as dt
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


def _run(tmp_path: Path, source: Path, **params) -> dict:  # noqa: ANN003
    return daily_pipeline(
        sources=[str(source)],
        database_url=f"sqlite:///{tmp_path / 'flow.db'}",
        home=str(tmp_path / "home"),
        overrides=TINY,
        **params,
    )


def test_the_flow_runs_every_stage_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    first = _run(tmp_path, source)
    assert first["as_of"] == "2024-03-22"  # the newest price
    assert first["ingest"]["rows_loaded"] == 120
    assert first["model"]["action"] == "retrain" and first["model"]["model_version"] == 1
    assert first["forecast"]["forecasts_written"] == 10
    engine = open_database(f"sqlite:///{tmp_path / 'flow.db'}")
    before = table_snapshot(engine)
    files = {path: sha256_file(path) for path in (tmp_path / "home").rglob("*") if path.is_file()}

    second = _run(tmp_path, source)
    assert second["model"] == {
        **first["model"],
        "action": "reuse",
        "created": False,
        "reason": second["model"]["reason"],
    }
    assert table_snapshot(engine) == before
    assert {p: sha256_file(p) for p in (tmp_path / "home").rglob("*") if p.is_file()} == files


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
    assert summary["as_of"] == "2024-03-15"
    assert summary["forecast"]["tickers"] == ["AAA", "CCC"]
    engine = open_database(f"sqlite:///{tmp_path / 'flow.db'}")
    with engine.connect() as conn:
        rows = read_forecasts(conn)
    assert rows["target_date"].tolist() == [dt.date(2024, 3, 18), dt.date(2024, 3, 19)] * 2
    # Files load whole: all three tickers up to the as-of date; the last week is deferred.
    assert (summary["ingest"]["rows_loaded"], summary["ingest"]["rows_deferred"]) == (165, 15)


@pytest.mark.parametrize(
    ("auto", "when", "expected"),
    [
        (True, dt.datetime(2024, 3, 22, 22, 30, tzinfo=dt.UTC), dt.date(2024, 3, 22)),
        (True, dt.datetime(2024, 3, 23, 2, 0, tzinfo=dt.UTC), dt.date(2024, 3, 22)),
        (False, dt.datetime(2024, 3, 22, 22, 30, tzinfo=dt.UTC), None),
    ],
)
def test_scheduled_runs_take_the_new_york_date_of_their_schedule(
    monkeypatch: pytest.MonkeyPatch, auto: bool, when: dt.datetime, expected: dt.date | None
) -> None:
    run = SimpleNamespace(auto_scheduled=auto, expected_start_time=when)
    fake = SimpleNamespace(get=lambda: SimpleNamespace(flow_run=run))
    monkeypatch.setattr(flows.daily, "FlowRunContext", fake)
    assert scheduled_as_of() == expected
