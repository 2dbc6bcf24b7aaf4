"""Change detection: the prices counter and the record of completed runs."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import synthetic_prices, write_long_csv
from sqlalchemy.engine import Engine

from pipeline.db.prices import upsert_prices
from pipeline.db.runs import (
    PRICES,
    bump_data_version,
    completed_run,
    data_version,
    files_vouched_for,
    record_run,
    run_inputs,
    run_key,
)
from pipeline.db.schema import backtest_runs, forecasts, models, run_states
from pipeline.files import sha256_file
from pipeline.ingest.load import ingest
from pipeline.ingest.sources import build_sources

AS_OF = dt.date(2024, 3, 22)


def test_the_counter_counts_writes_and_rolls_back_with_them(portable_engine: Engine) -> None:
    with portable_engine.begin() as conn:
        assert data_version(conn, PRICES) == 0
        assert bump_data_version(conn, PRICES) == 1
        assert bump_data_version(conn, PRICES) == 2
        assert data_version(conn, "other") == 0
    try:
        with portable_engine.begin() as conn:
            bump_data_version(conn, PRICES)
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with portable_engine.connect() as conn:
        assert data_version(conn, PRICES) == 2


def test_ingest_raises_the_counter_only_when_a_file_changes(engine: Engine, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    frame = synthetic_prices(days=20)
    write_long_csv(frame, drop / "prices.csv")

    def run() -> int:
        with engine.begin() as conn:
            ingest(conn, build_sources([str(drop)]), as_of=None, tickers=None, run_id="t")
            return data_version(conn, PRICES)

    first = run()
    assert first >= 1
    assert run() == first  # the same file again: unchanged, nothing written
    write_long_csv(frame.iloc[:-5], drop / "prices.csv")  # a correction that drops rows
    assert run() > first


def _register(conn: sa.Connection, version: int, through: dt.date) -> None:
    conn.execute(
        sa.insert(models).values(
            version=version,
            fingerprint=f"f{version}",
            mode="retrain",
            trained_at=dt.datetime(2024, 3, 22, tzinfo=dt.UTC),
            data_through=through,
            train_through=through,
            tickers=["AAA"],
            hyperparameters={},
            file_path="/nowhere",
            train_samples=1,
            validation_samples=1,
            epochs_run=1,
            promoted=True,
        )
    )


def test_run_inputs_change_with_prices_champion_forecasts_and_backtests(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_prices(conn, synthetic_prices(days=30))
        seen = [run_inputs(conn, AS_OF)]
        assert run_inputs(conn, AS_OF) == seen[0]  # nothing changed, same digest

        _register(conn, 1, AS_OF)
        seen.append(run_inputs(conn, AS_OF))
        _register(conn, 2, AS_OF + dt.timedelta(days=3))  # after the as-of date: not seen
        assert run_inputs(conn, AS_OF) == seen[-1]

        conn.execute(
            sa.insert(forecasts).values(
                ticker="AAA",
                as_of_date=AS_OF,
                target_date=AS_OF + dt.timedelta(days=3),
                model_version=1,
                horizon=1,
                yhat=1.0,
            )
        )
        seen.append(run_inputs(conn, AS_OF))

        conn.execute(
            sa.insert(backtest_runs).values(
                run_id="b1",
                created_at=dt.datetime(2024, 3, 23, tzinfo=dt.UTC),
                as_of_date=AS_OF,
                folds=1,
                horizon=1,
                test_fraction=0.2,
                origins="expanding",
                interval_level=0.9,
                tickers=["AAA"],
                models=[],
            )
        )
        seen.append(run_inputs(conn, AS_OF))

        bump_data_version(conn, PRICES)
        seen.append(run_inputs(conn, AS_OF))
    assert len(set(seen)) == len(seen)


def test_a_completed_run_is_found_by_its_key_and_inputs(engine: Engine) -> None:
    settings = {"window": 10, "horizon": 5}
    key = run_key("daily-pipeline", AS_OF, ["BBB", "AAA"], settings)
    assert key == run_key("daily-pipeline", AS_OF, ["AAA", "BBB"], settings)
    assert key != run_key("daily-pipeline", AS_OF, ["AAA"], settings)
    assert key != run_key("daily-pipeline", AS_OF, ["AAA", "BBB"], {**settings, "horizon": 3})
    assert key != run_key("daily-pipeline", AS_OF + dt.timedelta(days=1), ["AAA", "BBB"], settings)

    with engine.begin() as conn:
        upsert_prices(conn, synthetic_prices(days=30))
        inputs = run_inputs(conn, AS_OF)
        assert completed_run(conn, key, inputs) is None
        summary = {"as_of": AS_OF.isoformat(), "forecast": {"forecasts_written": 10}}
        finished = dt.datetime(2026, 12, 1, 10, 35, 7, 354591, tzinfo=dt.UTC)
        record_run(conn, key, "daily-pipeline", AS_OF, summary, finished_at=finished)
        found = completed_run(conn, key, inputs)
        assert found is not None
        assert found["forecast"] == {"forecasts_written": 10}
        assert found["finished_at"] == "2026-12-01 10:35:07 UTC"  # on every engine

        record_run(conn, key, "daily-pipeline", AS_OF, {**summary, "forecast": {"n": 1}})
        assert completed_run(conn, key, inputs)["forecast"] == {"n": 1}  # replaced, one row
        assert conn.execute(sa.text("SELECT COUNT(*) FROM run_states")).scalar_one() == 1

        bump_data_version(conn, PRICES)
        assert completed_run(conn, key, run_inputs(conn, AS_OF)) is None


def test_dates_in_a_summary_are_stored_as_text(engine: Engine) -> None:
    with engine.begin() as conn:
        key = run_key("daily-pipeline", AS_OF, ["AAA"], {})
        record_run(conn, key, "daily-pipeline", AS_OF, {"day": AS_OF, "ts": pd.Timestamp(AS_OF)})
        found = completed_run(conn, key, run_inputs(conn, AS_OF))
    assert found["day"] == "2024-03-22"
    assert found["ts"].startswith("2024-03-22")


def test_a_completed_run_vouches_only_for_intact_files(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``run`` once reported "unchanged" without looking at the files: a deleted champion
    then failed nothing until the next forecast. The champion's model files and the
    report are checked before a recorded summary is returned."""
    model, report = tmp_path / "model-v00001.keras", tmp_path / "report-2024-03-22.html"
    model.write_bytes(b"network")
    report.write_text("<html>report</html>")
    key = run_key("daily-pipeline", AS_OF, ["AAA"], {})
    summary = {"model": {"champion_version": 1}, "report": str(report)}
    with engine.begin() as conn:
        _register(conn, 1, AS_OF)
        conn.execute(sa.update(models).values(file_path=str(model), file_sha256=sha256_file(model)))
        record_run(conn, key, "daily-pipeline", AS_OF, summary)
        inputs = run_inputs(conn, AS_OF)
    assert files_vouched_for_now(engine, key, inputs) == []

    for damage, expected in [
        (lambda: model.write_bytes(b"other network"), f"champion v1 at {model} are not the ones"),
        (lambda: model.unlink(), f"champion v1 at {model} are missing (SHA-256 none; registered"),
        (lambda: report.write_text("<html>edited</html>"), f"report {report} is not the one"),
        (lambda: report.unlink(), f"report {report} is missing"),
    ]:
        model.write_bytes(b"network")
        report.write_text("<html>report</html>")
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING), engine.connect() as conn:
            assert completed_run(conn, key, inputs) is None
        (warning,) = caplog.records
        assert "every stage runs again" in warning.getMessage()
        assert expected in warning.getMessage()
        (problem,) = files_vouched_for_now(engine, key, inputs)
        assert expected in problem


def files_vouched_for_now(engine: Engine, key: str, inputs: str) -> list[str]:
    """The damage ``completed_run`` sees (and then finds no completed run)."""
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(run_states.c.summary).where(run_states.c.run_key == key)
        ).scalar_one()
        found = completed_run(conn, key, inputs)
        problems = files_vouched_for(conn, stored)
    assert (found is None) == bool(problems)
    return problems
