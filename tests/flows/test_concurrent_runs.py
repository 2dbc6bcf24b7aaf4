"""Two pipeline runs on one database at once: the second waits, both finish, nothing collides."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import sqlalchemy as sa
from helpers import TINY_OVERRIDES, synthetic_prices, write_long_csv

from flows.daily import daily_pipeline
from pipeline.db.migrate import open_database
from pipeline.results import RunSummary


def test_two_daily_runs_at_once_are_serialised(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    results: dict[str, object] = {}

    def run(as_of: dt.date) -> None:
        try:
            results[as_of.isoformat()] = daily_pipeline(
                as_of_date=as_of,
                sources=[str(source)],
                database_url=url,
                home=str(tmp_path / "home"),
                overrides={**TINY_OVERRIDES, "retrain_after_days": 0},
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[as_of.isoformat()] = exc

    threads = [
        threading.Thread(target=run, args=(day,))
        for day in (dt.date(2024, 3, 15), dt.date(2024, 3, 22))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert all(isinstance(result, RunSummary) for result in results.values()), results
    engine = open_database(url)
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version, data_through FROM models")).all()
        forecasts = conn.execute(
            sa.text(
                "SELECT f.as_of_date, count(*), max(m.data_through) FROM forecasts f "
                "JOIN models m ON m.version = f.model_version GROUP BY f.as_of_date"
            )
        ).all()
    # Two retrains (retrain_after_days 0), one version each, no collision.
    assert sorted(version for version, _ in versions) == [1, 2]
    assert len(forecasts) == 2
    for as_of, count, data_through in forecasts:
        assert count == 10
        assert str(data_through) <= str(as_of)
