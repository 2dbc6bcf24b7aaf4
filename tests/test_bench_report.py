"""``benchmarks/end_to_end.py``'s printed tables and JSON, with and without the tutorial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import end_to_end


def _pipeline() -> dict[str, Any]:
    stages = {"train": 60.0, "ingest": 30.0, "sequences": 5.0}
    return {
        "backfill": {
            "seconds": 100.0,
            "stages": stages,
            "summary": {
                "model": {"action": "retrain", "epochs_run": 4, "samples_per_second": 50_000.0}
            },
            "peak_rss_mib": 700.0,
        },
        "incremental": {"seconds": 5.0, "stages": {"train": 2.0, "sequences": 1.5}},
        "noop": {"seconds": 1.0, "stages": {"ingest": 0.5}},
        "mase": {"mean": 1.00001, "median": 1.0, "max": 1.004},
        "peak_rss_mib": 750.0,
    }


def _tutorial() -> dict[str, Any]:
    return {
        "seconds": 1000.0,
        "samples_per_second": 5_000.0,
        "peak_rss_mib": 1200.0,
        "mase": {"mean": 1.5, "median": 1.4, "max": 3.0},
    }


def _result(tutorial: bool) -> dict[str, Any]:
    result = {
        "tickers": 2,
        "years": 1,
        "rows": 504,
        "cut_off": "2020-01-07",
        "test_days": 60,
        "pipeline": _pipeline(),
    }
    if tutorial:
        result["tutorial"] = _tutorial()
    return result


def test_the_report_compares_with_the_tutorial_when_it_ran() -> None:
    text = end_to_end.report(_result(tutorial=True))
    assert "tutorial loop                |  1000.0 |  1.00" in text
    assert "pipeline backfill            |   100.0 | 0.100  (10.0x faster; target >= 10x)" in text
    assert "incremental day              |     5.0 | 0.050  of the backfill" in text
    assert "tutorial (20 epochs, batch 32)|     5,000 |" in text


def test_without_the_tutorial_the_report_gives_the_pipelines_tables() -> None:
    text = end_to_end.report(_result(tutorial=False))
    assert "tutorial" not in text.replace("(tutorial not run: --skip-tutorial)", "")
    assert "pipeline backfill            |   100.0 |  1.00  (tutorial not run" in text
    assert "incremental day              |     5.0 | 0.050  of the backfill" in text
    assert "no-op rerun                  |     1.0 | 0.010  of the backfill" in text
    assert "train                        |    60.00 |        2.00 |  0.00" in text
    assert "pipeline (retrain, 4 epochs) |    50,000 |          700 |    1.0000 |" in text


def test_skip_tutorial_writes_the_json_and_prints_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def fake_part(part: str, work: Path, args: Any) -> dict[str, Any]:
        ran.append(part)
        return _pipeline()

    monkeypatch.setattr(end_to_end, "_run_part", fake_part)
    monkeypatch.setattr(end_to_end, "run_command_days", lambda *args: [])
    out = tmp_path / "result.json"
    end_to_end.main(
        ["--tickers", "2", "--years", "1", "--skip-tutorial", "--json", str(out)]
        + ["--work", str(tmp_path / "work")]
    )
    assert ran == ["pipeline"]
    written = json.loads(out.read_text())
    assert "tutorial" not in written
    assert written["ratios"] == {"incremental_over_backfill": 0.05, "noop_over_backfill": 0.01}
    assert written["pipeline"]["backfill"]["seconds"] == 100.0
    printed = capsys.readouterr().out
    assert "(tutorial not run: --skip-tutorial)" in printed
    assert f"written: {out}" in printed
