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
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.results import (
    BacktestSummary,
    ForecastSummary,
    IngestSummary,
    ModelSummary,
    RetentionSummary,
    RunSummary,
    SequencesSummary,
)

SNAPSHOT = Path(__file__).parent / "data" / "daily_run_summary.json"
SECTIONS = {
    "ingest": IngestSummary,
    "sequences": SequencesSummary,
    "model": ModelSummary,
    "forecast": ForecastSummary,
    "backtest": BacktestSummary,
    "retention": RetentionSummary,
}


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
