"""``benchmarks/end_to_end.py``'s command days: which days run, what is read back."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks import end_to_end


def test_the_model_line_gives_the_action() -> None:
    out = (
        "as of:     2020-01-09\n"
        "model:     v2 (finetune: 1000 training windows are new since champion v1); "
        "not promoted\nforecasts: 5000 written\n"
    )
    found = end_to_end.MODEL_LINE.search(out)
    assert found is not None
    assert (found["version"], found["action"]) == ("2", "finetune")


def test_days_run_until_the_first_fine_tune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd.DataFrame({"SYN000": [1.0]}).to_parquet(tmp_path / "closes.parquet")
    actions = iter(["reuse", "reuse", "finetune", "reuse"])
    ran: list[dt.date] = []

    def fake_day(work: Path, closes: pd.DataFrame, day: dt.date) -> dict[str, Any]:
        ran.append(day)
        return {"as_of": day.isoformat(), "seconds": 1.0, "action": next(actions)}

    monkeypatch.setattr(end_to_end, "run_command_day", fake_day)
    days = [dt.date(2020, 1, day) for day in (9, 10, 13, 14, 15)]
    result = end_to_end.run_command_days(tmp_path, days, limit=5)
    assert ran == days[:3] and [day["action"] for day in result][-1] == "finetune"
    assert end_to_end.run_command_days(tmp_path, days, limit=0) == []


def test_stage_times_are_read_from_prefects_database(tmp_path: Path) -> None:
    """The newest top-level ``daily-pipeline`` run, its tasks and its subflows' tasks."""
    path = tmp_path / "prefect.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            create table flow (id text, name text);
            create table flow_run (id text, flow_id text, start_time text,
                total_run_time text, parent_task_run_id text);
            create table task_run (id text, name text, total_run_time text, flow_run_id text);
            insert into flow values ('f', 'daily-pipeline'), ('s', 'sequences-shards');
            insert into flow_run values
                ('old', 'f', '2020-01-01 00:00:00', '1970-01-01 00:00:09.000000', null),
                ('new', 'f', '2020-01-02 00:00:00', '1970-01-01 00:00:30.500000', null),
                ('sub', 's', '2020-01-02 00:00:01', '1970-01-01 00:00:04.000000', 't2');
            insert into task_run values
                ('t0', 'train-abc', '1970-01-01 00:00:07.000000', 'old'),
                ('t1', 'train-abc', '1970-01-01 00:00:20.250000', 'new'),
                ('t2', 'sequences-shards-def', '1970-01-01 00:00:04.000000', 'new'),
                ('t3', 'sequences-shard-1-of-2-aaa', '1970-01-01 00:00:02.000000', 'sub'),
                ('t4', 'sequences-shard-2-of-2-bbb', '1970-01-01 00:00:01.500000', 'sub');
            """
        )
    times = end_to_end.command_flow_times(path)
    assert times["flow_seconds"] == 30.5
    assert times["stages"] == {
        "train": 20.25,
        "sequences-shards": 4.0,
        "sequences-shard-1-of-2": 2.0,
        "sequences-shard-2-of-2": 1.5,
    }
    assert end_to_end.command_flow_times(tmp_path / "missing.db") == {}


def test_the_table_names_the_fine_tune_day() -> None:
    day = {
        "as_of": "2020-01-09",
        "action": "finetune",
        "seconds": 28.0,
        "flow_seconds": 24.0,
        "stages": {"train": 15.0},
        "load_average_before": (1.2, 1.0, 0.9),
    }
    table = end_to_end.command_report([day])
    assert "2020-01-09 | finetune |      28.0 |   24.0 |       4.0 |  15.00" in table
    assert table.endswith("fine-tune day as a command: 28.0 s (target <= 30 s, start-up included)")
    at_5000 = end_to_end.command_report([day], tickers=5000)
    assert at_5000.endswith(
        "fine-tune day as a command: 28.0 s (target <= 90 s, start-up included)"
    )
    assert end_to_end.command_report([]) == ""


def test_command_days_only_reruns_them_on_a_kept_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--command-days-only`` runs the command days on ``--work`` as it is and puts their
    table in place of ``command_days`` in the JSON, keeping the rest of the result."""
    pd.DataFrame({"SYN000": [1.0]}).to_parquet(tmp_path / "closes.parquet")
    ran: list[dt.date] = []

    def fake_day(work: Path, closes: pd.DataFrame, day: dt.date) -> dict[str, Any]:
        assert work == tmp_path
        ran.append(day)
        return {**measured, "as_of": day.isoformat()}

    measured = {"seconds": 2.0, "action": "finetune", "load_average_before": [0.5, 0.5, 0.5]}
    monkeypatch.setattr(end_to_end, "run_command_day", fake_day)
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps({"tickers": 5, "command_days": [{"seconds": 99.0}]}))
    argv = ["--tickers", "5", "--years", "1", "--test-days", "5", "--work", str(tmp_path)]
    end_to_end.main([*argv, "--command-days-only", "--json", str(saved)])
    _, _, _, test_days = end_to_end.layout(end_to_end.parse_args(argv))
    assert ran == [test_days[1]]
    result = json.loads(saved.read_text())
    assert result["tickers"] == 5
    assert result["command_days"] == [{**measured, "as_of": test_days[1].isoformat()}]
    with pytest.raises(SystemExit, match="needs --work"):
        end_to_end.main(["--command-days-only", "--json", str(saved)])
