"""``kill -9`` at each stage boundary of a daily run, and inside stages (mid-transaction,
mid-file-write, between a model's files and its registration), then a plain rerun: the
database and the model files converge to those of a run that was never killed.

The killed run is a subprocess (``_KILLED``) that runs ``daily_run`` under the
pipeline lock with one stage replaced by a ``SIGKILL`` of its own process: no
``finally``, no rollback but the database's, exactly as a machine that loses
power between two stages. The rerun and the reference run happen here. What
is compared: every row of every table (times, model file digests and what the
run itself ingested made neutral: they differ between any two runs) and the
files under ``models/``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import TINY_OVERRIDES, synthetic_prices, write_long_csv

from pipeline import stages
from pipeline.db.lock import pipeline_lock
from pipeline.db.migrate import open_database
from pipeline.db.schema import metadata
from pipeline.run import daily_run, local_stages
from pipeline.settings import Settings

NOW = dt.datetime(2024, 3, 25, 22, 0, tzinfo=dt.UTC)

#: The killed run: ``daily_run`` with the stage named in argv[1] replaced by SIGKILL.
_KILLED = """
import dataclasses, datetime as dt, os, signal, sys
from pipeline.db.lock import pipeline_lock
from pipeline.run import daily_run, local_stages
from pipeline.settings import Settings

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

stages = dataclasses.replace(local_stages(), **{sys.argv[1]: killed})
settings = Settings()
with pipeline_lock(settings.resolved_database_url):
    daily_run(stages, settings, None, "auto", run_id="run",
              now=dt.datetime(2024, 3, 25, 22, 0, tzinfo=dt.UTC))
"""

#: The run killed inside a stage: ``daily_run`` with the function argv[2] of module argv[1]
#: wrapped so that its call number argv[4] ends in SIGKILL: ``after`` it returned, or
#: while ``writing`` (the content written to the temporary file of ``write_atomically``,
#: not yet renamed into place).
_KILLED_INSIDE = """
import datetime as dt, importlib, os, signal, sys
# Imported before the patch, so that a name they import stays the original: patching
# pipeline.files.write_atomically then reaches only callers that look it up at call time.
import pipeline.model.store, pipeline.model.train, pipeline.report.build
import pipeline.sequences.build, pipeline.sequences.files, pipeline.ingest.load
from pipeline.db.lock import pipeline_lock
from pipeline.run import daily_run, local_stages
from pipeline.settings import Settings

module_name, name, when, call = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
module = importlib.import_module(module_name)
original = getattr(module, name)
calls = []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def wrapped(*args, **kwargs):
    calls.append(name)
    last = len(calls) == call
    if when == "writing" and last:
        path, write, *rest = args
        def write_then_die(temporary):
            write(temporary)
            die()
        return original(path, write_then_die, *rest, **kwargs)
    result = original(*args, **kwargs)
    if when == "after" and last:
        die()
    return result

setattr(module, name, wrapped)
settings = Settings()
with pipeline_lock(settings.resolved_database_url):
    daily_run(local_stages(), settings, None, "auto", run_id="run",
              now=dt.datetime(2024, 3, 25, 22, 0, tzinfo=dt.UTC))
"""

#: Columns whose values differ between any two runs, whatever happened: times, and the
#: digests of model files (a ``.keras`` file is a zip that records when it was written).
_VOLATILE_COLUMNS = ("trained_at", "created_at", "ingested_at", "finished_at", "changed_at")
_VOLATILE_COLUMNS += ("file_sha256",)
#: Keys of a run's stored summary that differ between any two runs: the digest of the
#: report (which says when it was written), and what the run itself ingested (after a
#: kill, the killed run ingested and the next run finds its input unchanged).
_VOLATILE_SUMMARY = ("ingest", "report_sha256")
#: What a run's summary says of the model that every run converging on one state must
#: agree on; the rest says what that run did (after a kill past training, the next run
#: reuses the model the killed run trained, and fitted nothing itself).
_MODEL_OUTCOME = ("model_version", "champion_version", "promoted", "data_through", "tickers")


def _environment(folder: Path, source: Path) -> dict[str, str]:
    return {
        "PRICECAST_DATABASE_URL": f"sqlite:///{folder / 'pricecast.db'}",
        "PRICECAST_HOME": str(folder / "home"),
        "PRICECAST_SOURCE": str(source),
        "PRICECAST_TRAIN_WORKERS": "0",
        **{f"PRICECAST_{key.upper()}": str(value) for key, value in TINY_OVERRIDES.items()},
    }


def _run(environment: dict[str, str]) -> None:
    settings = Settings(
        database_url=environment["PRICECAST_DATABASE_URL"],
        home=environment["PRICECAST_HOME"],
        source=[environment["PRICECAST_SOURCE"]],
        train_workers=0,
        **TINY_OVERRIDES,
    )
    with pipeline_lock(settings.resolved_database_url):
        daily_run(local_stages(), settings, None, "auto", run_id="run", now=NOW)


def _neutral(table: str, row: dict[str, Any]) -> dict[str, Any]:
    row = {
        name: "<varies>" if name in _VOLATILE_COLUMNS and value is not None else value
        for name, value in row.items()
    }
    if table == "run_states":
        summary = {k: v for k, v in row["summary"].items() if k not in _VOLATILE_SUMMARY}
        summary["model"] = {key: summary["model"][key] for key in _MODEL_OUTCOME}
        row["summary"] = summary
    return row


def _state(environment: dict[str, str]) -> dict[str, Any]:
    """Every row of every table, with what differs between any two runs made neutral, and
    the model files."""
    engine = open_database(environment["PRICECAST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            tables = {
                table.name: sorted(
                    repr(_neutral(table.name, dict(row._mapping)))
                    for row in conn.execute(sa.select(table))
                )
                for table in metadata.sorted_tables
            }
    finally:
        engine.dispose()
    home = Path(environment["PRICECAST_HOME"])

    def files(folder: str) -> list[str]:
        found = (home / folder).rglob("*")
        return sorted(str(path.relative_to(home / folder)) for path in found if path.is_file())

    return {
        "tables": tables,
        "model files": files("models"),
        "sequence files": files("sequences"),
        "reports": files("reports"),
    }


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prices")
    return write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), folder / "p.csv")


@pytest.fixture(scope="session")
def environment(tmp_path_factory: pytest.TempPathFactory, source: Path) -> dict[str, str]:
    """The one folder every run of these tests uses, in turn (a test at a time in each
    process): paths are part of a run's key and of the rows, so the killed run, its
    rerun and the reference must share it."""
    return _environment(tmp_path_factory.mktemp("kills") / "run", source)


def _forget(environment: dict[str, str]) -> None:
    """Remove the runs' database and home, and the engine cached on that database."""
    stages.database(environment["PRICECAST_DATABASE_URL"]).dispose()
    stages.database.cache_clear()
    shutil.rmtree(Path(environment["PRICECAST_HOME"]).parent)


@pytest.fixture(scope="session")
def reference(environment: dict[str, str]) -> dict[str, Any]:
    """The state of a run never killed, taken once (a run costs a few seconds)."""
    try:
        _run(environment)
        state = _state(environment)
    finally:
        _forget(environment)
    assert state["model files"] and state["sequence files"] and state["tables"]["forecasts"]
    return state


def _killed_then_rerun(environment: dict[str, str], *args: str) -> dict[str, Any]:
    """The state after the run of ``_KILLED``-like code ``args[0]`` (with ``args[1:]``)
    died of its SIGKILL and the next plain run ran."""
    try:
        killed = subprocess.run(
            [sys.executable, "-c", *args],
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        _run(environment)  # the next run, as the schedule would start it
        return _state(environment)
    finally:
        _forget(environment)


def _assert_converged(state: dict[str, Any], reference: dict[str, Any]) -> None:
    assert state["model files"] == reference["model files"]
    assert state["sequence files"] == reference["sequence files"]
    assert state["reports"] == reference["reports"]
    for table, rows in reference["tables"].items():
        assert set(state["tables"][table]) ^ set(rows) == set(), table


@pytest.mark.parametrize(
    "stage", ["sequences", "train", "forecast", "retention", "report", "record_run", "publish"]
)
def test_a_run_killed_before_a_stage_converges_on_the_next_run(
    environment: dict[str, str], reference: dict[str, Any], stage: str
) -> None:
    _assert_converged(_killed_then_rerun(environment, _KILLED, stage), reference)


#: Kill points inside stages: (module, function, when, which call).
_INSIDE = {
    # The ingest's upsert wrote the prices, its transaction is not committed.
    "mid-ingest transaction": ("pipeline.ingest.load", "upsert_prices", "after", 1),
    # The first ticker's sequence file is in place, the second is being written, and
    # no sequence_files row is.
    "mid sequence file write": ("pipeline.sequences.files", "write_atomically", "writing", 2),
    # The network's file is saved in the staging folder, not published.
    "mid model file write": ("pipeline.model.fit", "save_network", "after", 1),
    # The model's file is published, its registry row not committed.
    "after publishing the model file": ("pipeline.model.train", "publish_networks", "after", 1),
    # The report's content is in its temporary file, not renamed into place (``write_text``
    # is the one caller that looks ``write_atomically`` up in ``pipeline.files``).
    "mid report write": ("pipeline.files", "write_atomically", "writing", 1),
}


@pytest.mark.parametrize("point", list(_INSIDE))
def test_a_run_killed_inside_a_stage_converges_on_the_next_run(
    environment: dict[str, str], reference: dict[str, Any], point: str
) -> None:
    """What the transactions and atomic writes promise, tried: the files and rows a
    killed stage left half done are redone or replaced by the next plain run."""
    module, function, when, call = _INSIDE[point]
    state = _killed_then_rerun(environment, _KILLED_INSIDE, module, function, when, str(call))
    _assert_converged(state, reference)
