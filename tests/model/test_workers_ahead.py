"""The train stage's worker started ahead: it imports TensorFlow while the plan is
made, fits the networks when there are any, and is stopped unused when the decision
is to reuse; nothing is left running either way."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices
from worker_jobs import tensorflow_imported

from pipeline import columns as c
from pipeline.db.migrate import open_database
from pipeline.db.prices import upsert_prices
from pipeline.model import train as train_module
from pipeline.model.network import Workers
from pipeline.model.train import train
from pipeline.sequences.build import build_sequences

PRICES = synthetic_prices(("AAA", "BBB"), days=80)
DATES = [pd.Timestamp(day).date() for day in PRICES[c.TRADE_DATE].unique()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pool_threads() -> list[threading.Thread]:
    """Threads a process pool leaves behind if it is not shut down."""
    return [
        thread
        for thread in threading.enumerate()
        if type(thread).__name__ == "_ExecutorManagerThread" or thread.name == "QueueFeederThread"
    ]


def test_a_worker_started_ahead_has_tensorflow_imported_and_runs_the_jobs() -> None:
    with Workers(1, 10) as workers:
        workers.start()
        (started,) = workers.processes
        outcomes = workers.run(tensorflow_imported, [1, 2])
        assert workers.processes == [started]
    assert outcomes == [(started, True), (started, True)]
    assert not alive(started)
    assert pool_threads() == []


def test_discarding_a_worker_started_ahead_stops_it_without_waiting() -> None:
    workers = Workers(1, 10)
    workers.start()  # it is importing TensorFlow, seconds of work, when it is discarded
    (started,) = workers.processes
    workers.discard()
    assert workers.processes == []
    assert not alive(started)
    assert pool_threads() == []
    # The same Workers starts afresh afterwards.
    assert workers.run(tensorflow_imported, [1])[0][0] != started
    workers.close()


def test_an_exception_in_the_block_discards_the_workers() -> None:
    with pytest.raises(RuntimeError, match="plan failed"), Workers(1, 10) as workers:
        workers.start()
        (started,) = workers.processes
        raise RuntimeError("plan failed")
    assert not alive(started)


def test_without_worker_processes_start_does_nothing() -> None:
    workers = Workers(0, 1)
    workers.start()
    assert workers.processes == []
    assert workers.run(tensorflow_imported, [1])[0][0] == os.getpid()


class RecordingWorkers(Workers):
    """``Workers`` that note the processes started ahead, those that fitted, and
    whether they were discarded."""

    made: list[RecordingWorkers] = []

    def __init__(self, workers: int, jobs_per_worker: int) -> None:
        super().__init__(workers, jobs_per_worker)
        self.started: list[int] = []
        self.fitted_in: list[int] = []
        self.discarded = False
        RecordingWorkers.made.append(self)

    def start(self) -> None:
        super().start()
        self.started = self.processes

    def run(
        self,
        function: Callable[[Any], Any],
        jobs: Sequence[Any],
        on_done: Callable[[Any, Any], None] | None = None,
    ) -> list[Any]:
        outcomes = super().run(function, jobs, on_done)
        self.fitted_in = self.processes
        return outcomes

    def discard(self, timeout: float = 10.0) -> None:
        self.discarded = True
        super().discard(timeout)


def test_the_train_stage_fits_in_the_worker_it_started_and_drops_it_on_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "Workers", RecordingWorkers)
    RecordingWorkers.made = []
    home = tmp_path / "home"
    engine = open_database(f"sqlite:///{tmp_path / 'pricecast.db'}")
    config = TINY_MODEL.replace(drift_tolerance=100.0)  # a tiny model's error swings

    def day(as_of: Any, prepare: bool = True) -> Any:
        if prepare:
            with engine.begin() as conn:
                upsert_prices(conn, PRICES)
                build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
        with engine.begin() as conn:
            return train(conn, home, as_of, None, "auto", TINY_SEQUENCES, config, workers=1)

    try:
        first, tuned, reused = day(DATES[59]), day(DATES[69]), day(DATES[69], prepare=False)
    finally:
        engine.dispose()
    assert [(r.action, r.model_version) for r in (first, tuned, reused)] == [
        ("retrain", 1),
        ("finetune", 2),
        ("reuse", 2),
    ]
    retrain, finetune, reuse = RecordingWorkers.made
    for fitting in (retrain, finetune):  # the one worker started ahead fitted the network
        assert len(fitting.started) == 1 and fitting.fitted_in == fitting.started
        assert not fitting.discarded
    assert len(reuse.started) == 1 and reuse.fitted_in == [] and reuse.discarded
    for workers in RecordingWorkers.made:
        assert not alive(workers.started[0])
    assert pool_threads() == []
