"""Training in worker processes: the same weights as in this process, workers replaced,
their logs and errors brought back, and no TensorFlow left in the training process.

What it saves is measured by ``benchmarks/train_memory.py``, not here.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_SEQUENCES, synthetic_prices
from worker_jobs import pid_and_square

from pipeline import columns as c
from pipeline.db.migrate import open_database
from pipeline.db.models import get_model, model_scalers
from pipeline.db.prices import upsert_prices
from pipeline.model.network import Workers
from pipeline.model.store import load_networks
from pipeline.model.train import train
from pipeline.sequences.build import build_sequences

PRICES = synthetic_prices(("AAA", "BBB", "CCC"), days=80)
DATES = [pd.Timestamp(day).date() for day in PRICES[c.TRADE_DATE].unique()]
PER_TICKER = TINY_MODEL.replace(scope="per_ticker", epochs=2)


def train_twice(home: Path, workers: int, networks_per_worker: int) -> list[int]:
    """A per-ticker retrain, then a fine-tune (whose gate judges the first version, the
    champion); the versions registered."""
    engine = open_database(f"sqlite:///{home}.db")
    versions = []
    for as_of, mode in ((DATES[59], "retrain"), (DATES[69], "finetune")):
        with engine.begin() as conn:
            upsert_prices(conn, PRICES)
            build_sequences(conn, home, as_of, config=TINY_SEQUENCES)
        with engine.begin() as conn:
            result = train(
                conn,
                home,
                as_of,
                None,
                mode,
                TINY_SEQUENCES,
                PER_TICKER,
                workers=workers,
                networks_per_worker=networks_per_worker,
            )
        versions.append(result.model_version)
    engine.dispose()
    return versions


def describe(home: Path, versions: list[int]) -> list[dict]:
    """Each version's weights and registry figures."""
    engine = open_database(f"sqlite:///{home}.db")
    described = []
    for version in versions:
        with engine.connect() as conn:
            row = get_model(conn, version)
            scalers = model_scalers(conn, version)
        networks = load_networks(Path(row["file_path"]))
        described.append(
            {
                "weights": {key: network.get_weights() for key, network in networks.items()},
                "row": {
                    key: row[key]
                    for key in (
                        "mode",
                        "val_loss",
                        "train_samples",
                        "validation_samples",
                        "epochs_run",
                        "val_mae",
                        "val_mase",
                        "promoted",
                        "decision",
                        "champion_val_mae",
                    )
                },
                "tickers": {
                    ticker: (entry["damping"], entry["val_mae"], entry["interval_q"])
                    for ticker, entry in scalers.items()
                },
            }
        )
    engine.dispose()
    return described


#: The trainings in worker processes, run in a process of their own: which must never
#: import TensorFlow (what TensorFlow keeps of the networks stays in the workers). The
#: workers import this script too (``spawn``): it imports this test module (pandas,
#: SQLAlchemy, the helpers) only in the process that trains, not in each of them.
SCRIPT = """
import json, sys

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[2])
    from test_memory import train_twice

    versions = train_twice(__import__("pathlib").Path(sys.argv[1]), 1, 2)
    print(json.dumps({"versions": versions, "tensorflow": "tensorflow" in sys.modules}))
"""


def test_worker_processes_train_the_weights_this_process_trains(tmp_path: Path) -> None:
    """Networks fitted in worker processes in turn (two networks each), by a process that
    never imports TensorFlow (a long-lived ``pricecast serve``, say), or all in this
    process: bit for bit the same weights, validation figures, damping and intervals;
    a fine-tune too, whose gate judges the champion in a worker as well."""
    script = tmp_path / "train_twice.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "workers"), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"versions": [1, 2], "tensorflow": False}
    isolated = describe(tmp_path / "workers", [1, 2])
    local = describe(tmp_path / "local", train_twice(tmp_path / "local", 0, 1))
    assert [version["row"]["mode"] for version in local] == ["retrain", "finetune"]
    for ours, theirs in zip(isolated, local, strict=True):
        assert ours["row"] == theirs["row"]
        assert ours["tickers"] == theirs["tickers"]
        assert sorted(ours["weights"]) == ["AAA", "BBB", "CCC"]
        for key, weights in ours["weights"].items():
            for mine, other in zip(weights, theirs["weights"][key], strict=True):
                np.testing.assert_array_equal(mine, other)


def test_workers_are_replaced_after_their_jobs_and_forward_their_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    done = []
    with Workers(1, 2) as workers:
        outcomes = workers.run(pid_and_square, [1, 2, 3, 4, 5], lambda job, _: done.append(job))
        again = workers.run(pid_and_square, [6])
    assert [square for _, square in outcomes] == [1, 4, 9, 16, 25]
    assert done == [1, 2, 3, 4, 5]
    pids = [pid for pid, _ in outcomes + again]
    # Two jobs a process: 1-2, 3-4, then 5 and 6 share the third.
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert os.getpid() not in pids
    squared = [record.getMessage() for record in caplog.records if record.name.endswith("memory")]
    assert squared == [f"squaring {number}" for number in range(1, 7)]


def test_a_failing_job_raises_its_error_here() -> None:
    with Workers(1, 5) as workers, pytest.raises(ValueError, match="negative: -2"):
        workers.run(pid_and_square, [1, -2, 3])


def test_without_workers_the_jobs_run_here() -> None:
    outcomes = Workers(0, 1).run(pid_and_square, [2, 3])
    assert outcomes == [(os.getpid(), 4), (os.getpid(), 9)]


def test_a_daemonic_process_runs_the_jobs_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemonic process (a Dask worker's, say) may not start processes."""
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    assert Workers(1, 2).run(pid_and_square, [3]) == [(os.getpid(), 9)]
