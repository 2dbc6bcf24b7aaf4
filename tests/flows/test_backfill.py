"""The backfill flow: the daily pipeline for every trading day of a range, in order."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import TINY_OVERRIDES as TINY
from helpers import synthetic_prices, write_long_csv

from flows.backfill import backfill
from flows.daily import daily_pipeline
from pipeline import columns as c
from pipeline.db.engine import connect
from pipeline.db.migrate import open_database
from pipeline.db.schema import forecasts, models
from pipeline.errors import ConfigurationError
from pipeline.results import BackfillSummary, RunSummary
from pipeline.trading_calendar import trading_days

#: What the backfill flow returned for five days, 2024-02-15 to 2024-02-22 (the range
#: ``test_a_backfill_writes_exactly_what_the_daily_runs_would_have`` compared then), when
#: it built its result as a dictionary, before ``BackfillSummary``:
#: ``json.dumps(result, indent=1)``.
SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "backfill_summary.json"

#: Ten New York trading days around Presidents' Day (Monday 2024-02-19, closed).
START, END = dt.date(2024, 2, 12), dt.date(2024, 2, 26)
DAYS = [dt.date(2024, 2, day) for day in (12, 13, 14, 15, 16, 20, 21, 22, 23, 26)]
#: The backfill compared with daily runs: four of them, across the holiday (2024-02-15,
#: 16, 20 and 21): a retrain, then three fine-tunes that are not promoted (the champion
#: stays v1), one more than retention keeps, so that retention deletes files as well.
BACKFILLED = DAYS[3:7]

FORECAST_COLUMNS = (
    c.TICKER,
    c.AS_OF_DATE,
    c.TARGET_DATE,
    c.MODEL_VERSION,
    c.HORIZON,
    c.YHAT,
    "yhat_lower",
    "yhat_upper",
)
MODEL_COLUMNS = (
    "version",
    "fingerprint",
    "mode",
    "parent_version",
    "data_through",
    "val_mae",
    "promoted",
    "champion_version",
)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (START, END, DAYS),
        (dt.date(2024, 2, 17), dt.date(2024, 2, 19), []),  # a weekend and a holiday
        (dt.date(2024, 2, 19), dt.date(2024, 2, 20), [dt.date(2024, 2, 20)]),
        (dt.date(2024, 2, 16), dt.date(2024, 2, 16), [dt.date(2024, 2, 16)]),
    ],
)
def test_trading_days_are_the_sessions_of_the_range_in_order(
    start: dt.date, end: dt.date, expected: list[dt.date]
) -> None:
    assert trading_days(start, end) == expected


def test_a_range_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="start_date 2024-02-26 is after end_date"):
        trading_days(END, START)


def _rows(url: str, table: sa.Table, columns: tuple[str, ...]) -> list[tuple]:
    engine = open_database(url)
    try:
        with engine.connect() as conn:
            query = sa.select(*(table.c[name] for name in columns)).order_by(
                *(table.c[name] for name in columns[:4])
            )
            return [tuple(row) for row in conn.execute(query)]
    finally:
        engine.dispose()


def _untyped_result(
    start: dt.date, end: dt.date, days: list[dt.date], summaries: list[RunSummary]
) -> dict:
    """The backfill's result as the flow built it before ``BackfillSummary`` (its code)."""
    runs = []
    for summary in summaries:
        model, written = summary.model, summary.forecast.forecasts_written
        runs.append(
            {
                "as_of": summary.as_of.isoformat(),
                "model_version": model.model_version,
                "action": model.action,
                "champion_version": model.champion_version,
                "forecasts_written": written,
            }
        )
    return {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "trading_days": [day.isoformat() for day in days],
        "runs": runs,
    }


def test_the_typed_result_dumps_to_what_the_untyped_flow_returned() -> None:
    text = SNAPSHOT.read_text()
    summary = BackfillSummary.model_validate_json(text)
    assert summary.trading_days[2] == dt.date(2024, 2, 20)  # dates, not strings
    assert summary.runs[1].action == "finetune" and summary.runs[1].model_version == 2
    assert json.dumps(summary.model_dump(mode="json"), indent=1) == text.rstrip("\n")


def test_a_backfill_writes_exactly_what_the_daily_runs_would_have(tmp_path: Path) -> None:
    # Prices through 2024-03-08: every day of the range defers the closes after it.
    source = write_long_csv(
        synthetic_prices(("AAA", "BBB"), start="2023-10-02", days=115), tmp_path / "prices.csv"
    )

    def params(name: str) -> dict:
        return {
            "sources": [str(source)],
            "database_url": f"sqlite:///{tmp_path / name / 'pricecast.db'}",
            "home": str(tmp_path / name / "home"),
            "overrides": TINY,
        }

    daily = [daily_pipeline(as_of_date=day, **params("daily")) for day in BACKFILLED]
    result = backfill(start_date=BACKFILLED[0], end_date=BACKFILLED[-1], **params("backfill"))

    assert isinstance(result, BackfillSummary)
    assert result.trading_days == BACKFILLED
    assert [run.as_of for run in result.runs] == BACKFILLED
    assert [(run.action, run.model_version, run.champion_version) for run in result.runs] == [
        (s.model.action, s.model.model_version, s.model.champion_version) for s in daily
    ]
    # Its JSON is the dictionary the flow returned before it was typed, key for key.
    assert json.dumps(result.model_dump(mode="json"), indent=1) == json.dumps(
        _untyped_result(BACKFILLED[0], BACKFILLED[-1], BACKFILLED, daily), indent=1
    )
    # The comparison covers a retrain and the fine-tunes that follow it.
    actions = [run.action for run in result.runs]
    assert actions[0] == "retrain" and "finetune" in actions

    daily_url, backfill_url = params("daily")["database_url"], params("backfill")["database_url"]
    expected = _rows(daily_url, forecasts, FORECAST_COLUMNS)
    assert len(expected) == len(BACKFILLED) * 2 * 5  # days x tickers x horizon
    assert _rows(backfill_url, forecasts, FORECAST_COLUMNS) == expected
    assert _rows(backfill_url, models, MODEL_COLUMNS) == _rows(daily_url, models, MODEL_COLUMNS)

    # Retention ran at the end of every day: the files left are the champion's lineage
    # and at most the two newest unpromoted versions (PRICECAST_KEEP_UNPROMOTED), and
    # the registry says which versions lost their files.
    engine = connect(backfill_url)
    with engine.connect() as conn:
        registry = conn.execute(
            sa.select(models.c.version, models.c.promoted, models.c.files_deleted_at)
        ).all()
    engine.dispose()
    on_disk = sorted((tmp_path / "backfill" / "home" / "models").glob("model-v*"))
    kept = [row for row in registry if row.files_deleted_at is None]
    assert len(on_disk) == len(kept)
    assert sum(1 for row in kept if not row.promoted) <= 2
    if sum(1 for row in registry if not row.promoted) > 2:
        assert len(kept) < len(registry)
