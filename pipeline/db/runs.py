"""Change detection for whole runs: a rerun with nothing new returns at once.

Every ingest that writes to ``prices`` (a new or changed file, a feed's rows,
rows a corrected file dropped) raises its counter in ``data_versions``, in the
same transaction (``bump_data_version``). A completed daily run records, per *run
key* (the flow, as-of date, tickers and settings), a digest of the inputs its
outputs depend on (``run_inputs``): the prices counter, the champion as of
that date, the forecasts stored for that date, the newest backtest, and the
pricecast version. A later run with the same key and the same digest would
rewrite the same rows, so it returns the recorded summary instead.

The digest errs on the side of running: any ingest that loads rows changes
it, even rows equal to the stored ones, and so does a model trained by hand.
It never misses a change made through the pipeline; a change made behind its
back (an ``UPDATE prices`` by hand) is not seen, and ``pricecast run
--rerun`` runs every stage regardless (docs/pipeline.md says so).

Nor does it vouch for files it has not looked at: before returning a recorded
summary, ``completed_run`` checks the files that summary stands on, the
champion's model files (against ``models.file_sha256``) and the report it
names (against the digest recorded with the run). Any that is missing or
changed is reported and the run runs every stage, which retrains a damaged
champion and rewrites the report (``files_vouched_for``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import __version__
from pipeline import columns as c
from pipeline.db.models import champion_model, get_model
from pipeline.db.schema import backtest_runs, data_versions, forecasts, run_states
from pipeline.files import path_digest, sha256_bytes, sha256_file

logger = logging.getLogger(__name__)

PRICES = "prices"
#: The key of a recorded summary that holds the digest of the report it names.
REPORT_SHA256 = "report_sha256"


def _digest(payload: Any) -> str:
    return sha256_bytes(json.dumps(payload, sort_keys=True, default=str).encode())


def data_version(conn: Connection, name: str) -> int:
    """How many writes ``name`` has had (0 before the first)."""
    query = sa.select(data_versions.c.version).where(data_versions.c.name == name)
    return int(conn.execute(query).scalar_one_or_none() or 0)


def bump_data_version(conn: Connection, name: str, at: dt.datetime | None = None) -> int:
    """Raise ``name``'s counter by one in the caller's transaction; returns the new value."""
    at = at or dt.datetime.now(dt.UTC)
    updated = conn.execute(
        sa.update(data_versions)
        .where(data_versions.c.name == name)
        .values(version=data_versions.c.version + 1, changed_at=at)
    )
    if not updated.rowcount:
        conn.execute(sa.insert(data_versions).values(name=name, version=1, changed_at=at))
    return data_version(conn, name)


def run_key(flow: str, as_of: dt.date, tickers: Sequence[str], settings: Mapping[str, Any]) -> str:
    """The identity of a run: what it was asked to do."""
    return _digest(
        {"flow": flow, "as_of": as_of, "tickers": sorted(tickers), "settings": dict(settings)}
    )


def run_inputs(conn: Connection, as_of: dt.date) -> str:
    """A digest of what a run as of ``as_of`` depends on, besides its settings."""
    champion = champion_model(conn, as_of)
    stored = conn.execute(
        sa.select(sa.func.count(), sa.func.max(forecasts.c[c.MODEL_VERSION])).where(
            forecasts.c[c.AS_OF_DATE] == as_of
        )
    ).one()
    newest_backtest = conn.execute(
        sa.select(backtest_runs.c.run_id).order_by(backtest_runs.c.created_at.desc()).limit(1)
    ).scalar_one_or_none()
    return _digest(
        {
            "prices": data_version(conn, PRICES),
            "champion": champion["version"] if champion else None,
            "forecasts": list(stored),
            "backtest": newest_backtest,
            "pricecast": __version__,
        }
    )


def completed_run(conn: Connection, key: str, inputs: str) -> dict[str, Any] | None:
    """The summary of the completed run with this key and these inputs (without the
    report digest recorded with it), if any, and
    only if the files it vouches for are intact (``files_vouched_for``): otherwise
    ``None``, with a warning saying what is damaged, so that the run runs every stage
    and repairs it."""
    row = conn.execute(
        sa.select(run_states.c.summary, run_states.c.finished_at).where(
            run_states.c.run_key == key, run_states.c.inputs == inputs
        )
    ).one_or_none()
    if row is None:
        return None
    damaged = files_vouched_for(conn, row.summary)
    if damaged:
        logger.warning(
            "the completed run's outputs are not all intact, so every stage runs again: %s",
            "; ".join(damaged),
        )
        return None
    finished = row.finished_at
    if finished.tzinfo is not None:  # PostgreSQL; SQLite and MariaDB give UTC without a zone
        finished = finished.astimezone(dt.UTC).replace(tzinfo=None)
    summary = {key: value for key, value in row.summary.items() if key != REPORT_SHA256}
    return {**summary, "finished_at": f"{finished:%Y-%m-%d %H:%M:%S} UTC"}


def files_vouched_for(conn: Connection, summary: Mapping[str, Any]) -> list[str]:
    """What is wrong with the files a completed run's ``summary`` stands on: the model
    files of the champion it forecast with (the champion still: its version is among
    the run's inputs), checked against ``models.file_sha256``, and the report it names,
    checked against the digest recorded with it. Empty when all are intact.

    Versions registered before digests were kept, and runs recorded before report
    digests were, are checked for presence only.
    """
    problems = []
    version = (summary.get("model") or {}).get("champion_version")
    champion = get_model(conn, int(version)) if version is not None else None
    if champion is not None:
        path = Path(champion["file_path"])
        registered = champion.get("file_sha256")
        found = path_digest(path)
        if found is None or (registered is not None and found != registered):
            problems.append(
                f"the files of champion v{champion['version']} at {path} are "
                f"{'missing' if found is None else 'not the ones it was registered with'} "
                f"(SHA-256 {found or 'none'}; registered {registered or 'not recorded'})"
            )
    report = summary.get("report")
    if isinstance(report, str) and report:
        path = Path(report)
        recorded = summary.get(REPORT_SHA256)
        found = sha256_file(path) if path.is_file() else None
        if found is None or (recorded is not None and found != recorded):
            problems.append(
                f"the report {path} is "
                f"{'missing' if found is None else 'not the one the run wrote'} "
                f"(SHA-256 {found or 'none'}; recorded {recorded or 'not recorded'})"
            )
    return problems


def record_run(
    conn: Connection,
    key: str,
    flow: str,
    as_of: dt.date,
    summary: Mapping[str, Any],
    finished_at: dt.datetime | None = None,
) -> None:
    """Record a completed run: its key, the inputs it saw at its end, and its summary
    (with the digest of the report it names, if it names one, under ``REPORT_SHA256``)."""
    stored = dict(summary)
    report = summary.get("report")
    if isinstance(report, str) and report and Path(report).is_file():
        stored[REPORT_SHA256] = sha256_file(Path(report))
    values = {
        "flow": flow,
        c.AS_OF_DATE: as_of,
        "inputs": run_inputs(conn, as_of),
        "summary": json.loads(json.dumps(stored, default=str)),
        "finished_at": finished_at or dt.datetime.now(dt.UTC),
    }
    updated = conn.execute(
        sa.update(run_states).where(run_states.c.run_key == key).values(**values)
    )
    if not updated.rowcount:
        conn.execute(sa.insert(run_states).values(run_key=key, **values))
