"""The daily run's policy (``pipeline.run``) with the stages as plain calls, without Prefect."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path

import pytest
from helpers import (
    TINY_OVERRIDES,
    spy_on_decoded_files,
    synthetic_prices,
    table_snapshot,
    write_long_csv,
)

from pipeline.db.migrate import open_database
from pipeline.errors import MissingDataError, StaleDataError
from pipeline.ingest.sources import NO_SOURCE
from pipeline.results import ForecastSummary, SequencesSummary
from pipeline.run import (
    daily_run,
    fresh_tickers,
    local_stages,
    merge_forecast_summaries,
    merge_sequence_summaries,
)
from pipeline.sequences import handoff
from pipeline.settings import Settings

NOW = dt.datetime(2024, 3, 25, 22, 0, tzinfo=dt.UTC)


def _settings(tmp_path: Path, **given: object) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'run.db'}",
        home=tmp_path / "home",
        **{**TINY_OVERRIDES, **given},
    )


def test_a_run_writes_every_stage_then_a_rerun_stops_after_ingesting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = spy_on_decoded_files(monkeypatch)
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    settings = _settings(tmp_path, source=[str(source)])
    published = []
    stages = dataclasses.replace(
        local_stages(), publish=lambda summary, rows: published.append((summary, rows))
    )

    first = daily_run(stages, settings, None, "auto", run_id="one", now=NOW)
    assert first.as_of == dt.date(2024, 3, 22) and first.unchanged is False
    assert first.ingest.rows_loaded == 120
    assert first.sequences.tickers == ["AAA", "BBB"]
    assert first.model.action == "retrain" and first.model.champion_version == 1
    assert first.forecast.forecasts_written == 2 * settings.horizon
    assert Path(first.report).is_file()
    assert published[-1][0] is first and len(published[-1][1]) == 2 * settings.horizon
    # The train stage took the windows the sequences stage had just written, and kept none.
    assert decoded == [] and handoff.kept() == 0

    engine = open_database(settings.resolved_database_url)
    before = table_snapshot(engine)
    second = daily_run(stages, settings, None, "auto", run_id="two", now=NOW)
    assert second.unchanged is True
    assert second.model == first.model and second.forecast == first.forecast
    assert second.ingest.inputs_unchanged == 1
    assert table_snapshot(engine) == before
    assert published[-1][0] is second and published[-1][1] == published[0][1]

    third = daily_run(stages, settings, None, "auto", run_id="three", now=NOW, rerun=True)
    assert third.unchanged is False and third.model.action == "reuse"
    # Nothing new: the files were kept as they were, and the train stage read them.
    assert decoded == ["AAA.parquet", "BBB.parquet"] and handoff.kept() == 0
    assert table_snapshot(engine, exclude=("run_states",)) == {
        name: rows for name, rows in before.items() if name != "run_states"
    }


def test_without_a_source_or_prices_the_run_says_how_to_configure_one(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError) as raised:
        daily_run(local_stages(), _settings(tmp_path), None, "auto", run_id="x", now=NOW)
    assert str(raised.value) == f"the database holds no prices; nothing to forecast ({NO_SOURCE})"


def test_a_stale_ticker_is_skipped_or_fails_the_run_by_policy(tmp_path: Path) -> None:
    prices = synthetic_prices(("AAA", "BBB"), days=60)
    stale = prices[(prices["ticker"] == "AAA") | (prices["trade_date"] < "2024-03-22")]
    source = write_long_csv(stale, tmp_path / "p.csv")
    as_of = dt.date(2024, 3, 22)

    failing = _settings(tmp_path, source=[str(source)], stale_policy="fail")
    with pytest.raises(StaleDataError, match="BBB .*no forecast was written"):
        daily_run(local_stages(), failing, as_of, "auto", run_id="x", now=NOW)

    skipping = _settings(tmp_path, source=[str(source)])
    summary = daily_run(local_stages(), skipping, as_of, "auto", run_id="y", now=NOW)
    assert summary.stale == {"BBB": dt.date(2024, 3, 21)}
    assert summary.forecast.tickers == ["AAA"]


def test_fresh_tickers_under_each_policy() -> None:
    as_of = dt.date(2024, 3, 22)
    stale = {"BBB": dt.date(2024, 3, 21)}
    assert fresh_tickers(["AAA", "BBB"], {}, as_of, "fail") == ["AAA", "BBB"]
    assert fresh_tickers(["AAA", "BBB"], stale, as_of, "skip") == ["AAA"]
    with pytest.raises(StaleDataError, match="set PRICECAST_STALE_POLICY=skip"):
        fresh_tickers(["AAA", "BBB"], stale, as_of, "fail")
    with pytest.raises(
        StaleDataError, match=r"\(no ticker is fresh\)\. Ingest the missing closes$"
    ):
        fresh_tickers(["BBB"], stale, as_of, "skip")


def test_shard_summaries_merge_into_one_stage_summary() -> None:
    as_of = dt.date(2024, 3, 22)
    shards = [["AAA", "BBB"], ["CCC"]]
    merged = merge_sequence_summaries(
        as_of,
        [
            SequencesSummary(
                as_of=as_of,
                tickers=["AAA"],
                train_windows=40,
                validation_windows=8,
                skipped={"BBB": "too short"},
            ),
            SequencesSummary(
                as_of=as_of, tickers=["CCC"], train_windows=30, validation_windows=6, skipped={}
            ),
        ],
        shards,
    )
    assert merged.model_dump(mode="json") == {
        "as_of": "2024-03-22",
        "tickers": ["AAA", "CCC"],
        "train_windows": 70,
        "validation_windows": 14,
        "skipped": {"BBB": "too short"},
    }
    empty = SequencesSummary(
        as_of=as_of, tickers=[], train_windows=0, validation_windows=0, skipped={}
    )
    with pytest.raises(MissingDataError, match="no prices for AAA, BBB, CCC on or before"):
        merge_sequence_summaries(as_of, [empty, empty], shards)
    forecasts = merge_forecast_summaries(
        [
            ForecastSummary(
                as_of=as_of,
                model_version=3,
                horizon=5,
                tickers=["AAA"],
                forecasts_written=5,
                stale={"AAA": dt.date(2024, 3, 21)},
            ),
            ForecastSummary(
                as_of=as_of,
                model_version=3,
                horizon=5,
                tickers=["CCC"],
                forecasts_written=5,
                stale={},
            ),
        ]
    )
    assert forecasts.model_dump(mode="json") == {
        "as_of": "2024-03-22",
        "model_version": 3,
        "horizon": 5,
        "tickers": ["AAA", "CCC"],
        "forecasts_written": 10,
        "stale": {"AAA": "2024-03-21"},
    }


@pytest.mark.parametrize("damage", ["deleted", "random bytes"])
def test_a_damaged_champion_heals_by_retraining_even_when_nothing_else_changed(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A deleted or overwritten champion file once made every later run fail (or, with
    nothing new, report "unchanged" over a model that was gone); truncated and swapped
    files are healed alike (tests/model/test_train.py)."""
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    settings = _settings(tmp_path, source=[str(source)])
    first = daily_run(local_stages(), settings, None, "auto", run_id="one", now=NOW)
    path = settings.home_path / "models" / "model-v00001.keras"
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(os.urandom(path.stat().st_size))

    with caplog.at_level(logging.WARNING):
        second = daily_run(local_stages(), settings, None, "auto", run_id="two", now=NOW)
    assert second.unchanged is False
    model = second.model
    assert (model.action, model.created, model.promoted) == ("retrain", True, True)
    assert model.champion_version == 2
    assert model.reason.startswith(f"the files of model v1 at {path} ")
    assert model.damaged_files and model.damaged_files[0] in model.reason
    assert second.forecast.model_version == 2
    assert second.forecast.forecasts_written == first.forecast.forecasts_written
    warnings = [record.getMessage() for record in caplog.records]
    assert any("every stage runs again" in message for message in warnings)
    assert any(str(path) in message and "retrained" in message for message in warnings)
    # Healed: the next run has nothing to do.
    third = daily_run(local_stages(), settings, None, "auto", run_id="three", now=NOW)
    assert third.unchanged is True and third.model.champion_version == 2


def test_a_deleted_report_is_written_again(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    settings = _settings(tmp_path, source=[str(source)])
    first = daily_run(local_stages(), settings, None, "auto", run_id="one", now=NOW)
    Path(first.report).unlink()
    second = daily_run(local_stages(), settings, None, "auto", run_id="two", now=NOW)
    assert second.unchanged is False and second.model.action == "reuse"
    assert Path(second.report).is_file()
