"""The pipeline lock: one run at a time per database, re-entrant within a run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pipeline.db.lock import LockTimeoutError, pipeline_lock


def _hold(url: str, seconds: float, events: list, name: str, started: threading.Event) -> None:
    with pipeline_lock(url, wait_seconds=30):
        events.append((name, "in", time.monotonic()))
        started.set()
        time.sleep(seconds)
        events.append((name, "out", time.monotonic()))


def _serialised(url: str) -> None:
    events: list = []
    first_in = threading.Event()
    first = threading.Thread(target=_hold, args=(url, 1.0, events, "first", first_in))
    first.start()
    assert first_in.wait(30)
    second_in = threading.Event()
    second = threading.Thread(target=_hold, args=(url, 0.0, events, "second", second_in))
    second.start()
    first.join(30)
    second.join(30)
    assert [(name, kind) for name, kind, _ in events] == [
        ("first", "in"),
        ("first", "out"),
        ("second", "in"),
        ("second", "out"),
    ]
    assert events[2][2] >= events[1][2]


def test_a_second_run_waits_for_the_first(db_url: str) -> None:
    _serialised(db_url)


def test_the_lock_is_reentrant_within_a_run_and_times_out_for_others(
    db_url: str, tmp_path: Path
) -> None:
    with pipeline_lock(db_url, wait_seconds=5), pipeline_lock(db_url, wait_seconds=5):
        outcome: list = []

        def other() -> None:
            try:
                with pipeline_lock(db_url, wait_seconds=0.6):
                    outcome.append("entered")
            except LockTimeoutError as exc:
                outcome.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
    assert len(outcome) == 1
    assert outcome[0].startswith("another pricecast run has held the lock on ")
    assert "for more than 1 s" in outcome[0]
    # Released: another run gets it at once.
    with pipeline_lock(db_url, wait_seconds=1):
        pass


@pytest.mark.mariadb
def test_mariadb_runs_are_serialised_too(mariadb_server_url: str) -> None:
    _serialised(mariadb_server_url)
