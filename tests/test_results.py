"""The stages' typed results (``pipeline.results``) read and write the JSON a run stores.

``data/daily_run_summary.json`` is the summary a daily run stored in ``run_states``
before the stages returned typed results (the dictionaries of commit 60f03bb), and
the summary of the unchanged run after it, with paths and the values that vary from
run to run (timings, losses, the time it finished) replaced by placeholders. The
typed run must store and return the same JSON, key for key and in the same order.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import TINY_OVERRIDES, synthetic_prices, write_long_csv
from pydantic import ValidationError

from pipeline import stages
from pipeline.db.migrate import open_database
from pipeline.db.runs import record_run, run_inputs
from pipeline.db.schema import backtest_metrics, backtest_runs, run_states
from pipeline.files import sha256_file
from pipeline.results import (
    BacktestSummary,
    ForecastSummary,
    IngestSummary,
    ModelSummary,
    RetentionSummary,
    RunSummary,
    SequencesSummary,
)
from pipeline.run import daily_run, local_stages
from pipeline.settings import Settings

SNAPSHOT = Path(__file__).parent / "data" / "daily_run_summary.json"
NOW = dt.datetime(2024, 3, 25, 22, 0, tzinfo=dt.UTC)
#: Values that differ between runs and machines: only their type is compared.
VOLATILE = ("val_loss", "val_mase", "champion_val_mase", "fit_seconds", "samples_per_second")
SECTIONS = {
    "ingest": IngestSummary,
    "sequences": SequencesSummary,
    "model": ModelSummary,
    "forecast": ForecastSummary,
    "backtest": BacktestSummary,
    "retention": RetentionSummary,
}


def _normalised(summary: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    data = json.loads(json.dumps(summary).replace(str(tmp_path), "{tmp}"))
    for name in VOLATILE:
        value = data["model"][name]
        data["model"][name] = None if value is None else f"<{type(value).__name__}>"
    if "finished_at" in data:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", data["finished_at"])
        data["finished_at"] = "<finished_at>"
    return data


def _store_backtest(url: str) -> None:
    """A stored backtest with two models' one-step scores, for the run's summary."""
    engine = open_database(url)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(backtest_runs).values(
                run_id="b" * 32,
                created_at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
                as_of_date=dt.date(2024, 3, 1),
                folds=1,
                horizon=1,
                test_fraction=0.2,
                origins="expanding",
                interval_level=0.9,
                tickers=["AAA"],
                models=[],
            )
        )
        for model, default, mase, coverage in (
            ("naive", False, 1.0, None),
            ("default", True, 0.5, 0.75),
        ):
            conn.execute(
                sa.insert(backtest_metrics).values(
                    run_id="b" * 32,
                    model=model,
                    ticker="AAA",
                    fold=0,
                    horizon=1,
                    is_default=default,
                    n=10,
                    mae=1.0,
                    rmse=1.0,
                    mape=1.0,
                    mase=mase,
                    coverage=coverage,
                )
            )
    engine.dispose()


def test_a_run_stores_the_summary_it_stored_before_and_reads_it_back(tmp_path: Path) -> None:
    prices = synthetic_prices(("AAA", "BBB", "CCC"), days=60)
    prices = prices[(prices["ticker"] != "CCC") | (prices["trade_date"] < "2024-03-22")]
    source = write_long_csv(prices, tmp_path / "p.csv")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'run.db'}",
        home=tmp_path / "home",
        source=[str(source)],
        **TINY_OVERRIDES,
    )
    _store_backtest(settings.resolved_database_url)
    first = daily_run(local_stages(), settings, None, "auto", run_id="one", now=NOW)
    engine = open_database(settings.resolved_database_url)
    with engine.connect() as conn:
        (stored,) = conn.execute(sa.select(run_states.c.summary)).scalars()
    # Stored beside the summary: the digest of the report it names (pipeline.db.runs).
    assert stored.pop("report_sha256") == sha256_file(Path(first.report))
    snapshot = json.loads(SNAPSHOT.read_text())

    # The JSON stored is the run's summary, in the shape (and key order) it always had.
    assert json.dumps(first.model_dump(mode="json")) == json.dumps(stored)
    assert json.dumps(_normalised(stored, tmp_path)) == json.dumps(snapshot["stored"])
    # Each stage's result, and the whole summary, read back into the same JSON.
    for key, model in SECTIONS.items():
        assert json.dumps(model.model_validate(stored[key]).model_dump(mode="json")) == json.dumps(
            stored[key]
        )
    assert RunSummary.model_validate(stored) == first
    assert json.dumps(RunSummary.model_validate(stored).model_dump(mode="json")) == json.dumps(
        stored
    )

    second = daily_run(local_stages(), settings, None, "auto", run_id="two", now=NOW)
    assert second.unchanged and second.finished_at is not None
    unchanged = second.model_dump(mode="json")
    assert json.dumps(_normalised(unchanged, tmp_path)) == json.dumps(snapshot["unchanged"])
    assert RunSummary.model_validate(unchanged) == second


def _summary(name: str = "stored", **changes: Any) -> dict[str, Any]:
    """The snapshot's summary ``name``, with values in place of its placeholders."""
    summary = json.loads(SNAPSHOT.read_text())[name]
    summary["model"].update(
        val_loss=0.5, val_mase=0.9, champion_val_mase=0.9, fit_seconds=1.5, samples_per_second=60.0
    )
    if "finished_at" in summary:
        summary["finished_at"] = "2024-03-25 22:00:00 UTC"
    return {**summary, **changes}


def test_each_result_reads_and_writes_the_stored_json() -> None:
    for name in ("stored", "unchanged"):
        stored = _summary(name)
        for key, model in SECTIONS.items():
            dumped = model.model_validate(stored[key]).model_dump(mode="json")
            assert json.dumps(dumped) == json.dumps(stored[key])
        summary = RunSummary.model_validate(stored)
        assert json.dumps(summary.model_dump(mode="json")) == json.dumps(stored)
        assert summary.unchanged == (name == "unchanged")


def test_a_fresh_run_has_no_finish_time_in_its_json_and_nan_stays_nan() -> None:
    summary = RunSummary.model_validate(_summary())
    assert summary.finished_at is None and "finished_at" not in summary.model_dump(mode="json")
    assert summary.as_of == dt.date(2024, 3, 22) and summary.stale == {"CCC": dt.date(2024, 3, 21)}
    finished = summary.model_copy(update={"finished_at": "2024-03-25 22:00:00 UTC"})
    assert list(finished.model_dump(mode="json"))[-2:] == ["unchanged", "finished_at"]
    diverged = summary.model.model_copy(update={"val_loss": float("nan")})
    assert json.dumps(diverged.model_dump(mode="json")).count("NaN") == 1  # as json.dumps wrote it


def test_results_are_frozen_and_refuse_unknown_or_missing_fields() -> None:
    summary = RunSummary.model_validate(_summary())
    with pytest.raises(ValidationError, match="frozen"):
        summary.model.champion_version = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        RunSummary.model_validate(_summary(rows=3))
    incomplete = _summary()
    del incomplete["forecast"]
    with pytest.raises(ValidationError, match="forecast"):
        RunSummary.model_validate(incomplete)


def test_a_stored_summary_of_another_shape_runs_every_stage_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    as_of = dt.date(2024, 3, 22)
    engine = open_database(url)
    with engine.begin() as conn:
        report = tmp_path / "report.html"
        report.write_text("<html></html>")
        record_run(conn, "good", "daily-pipeline", as_of, _summary(report=str(report)))
        record_run(conn, "old", "daily-pipeline", as_of, {"forecast": {"n": 1}})
        assert run_inputs(conn, as_of)
    found = stages.unchanged_run(url, "good", as_of)
    assert isinstance(found, RunSummary) and found.finished_at is not None
    assert stages.unchanged_run(url, "old", as_of) is None
    assert stages.unchanged_run(url, "missing", as_of) is None
