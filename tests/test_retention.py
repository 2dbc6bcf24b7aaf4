"""Retention: which model files and reports go, recorded in the registry, idempotent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.db.models import find_model_by_fingerprint
from pipeline.db.schema import models
from pipeline.retention import collect, retired_fingerprint

D0 = dt.date(2024, 1, 2)
NOW = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


def _register(conn, home: Path, version: int, days: int, promoted: bool, parent=None) -> Path:  # noqa: ANN001
    path = home / "models" / f"model-v{version:05d}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 1000)
    conn.execute(
        sa.insert(models),
        {
            "version": version,
            "fingerprint": f"{version:064d}",
            "mode": "finetune" if parent else "retrain",
            "parent_version": parent,
            "trained_at": NOW,
            "data_through": D0 + dt.timedelta(days=days),
            "tickers": ["AAA"],
            "hyperparameters": {"window": 5},
            "train_samples": 1,
            "validation_samples": 1,
            "epochs_run": 1,
            "file_path": str(path),
            "promoted": promoted,
        },
    )
    return path


def test_the_policy_keeps_the_lineage_recent_champions_and_the_newest_challengers(
    engine: Engine, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with engine.begin() as conn:
        paths = {
            1: _register(conn, home, 1, 0, True),  # an old champion
            2: _register(conn, home, 2, 1, True, parent=1),
            3: _register(conn, home, 3, 2, False, parent=2),  # challengers that lost
            4: _register(conn, home, 4, 3, False, parent=2),
            5: _register(conn, home, 5, 4, False, parent=2),
            6: _register(conn, home, 6, 40, True),  # the newest retrain
            7: _register(conn, home, 7, 41, True, parent=6),  # ... and its fine-tune
            8: _register(conn, home, 8, 90, False, parent=7),  # after the as-of date
        }
    reports = home / "reports"
    reports.mkdir()
    for day in ("2024-01-05", "2024-02-10", "2024-02-20"):
        (reports / f"report-{day}.html").write_text("<!doctype html>")
    as_of = D0 + dt.timedelta(days=45)  # 2024-02-16: 30 days back is 2024-01-17

    with engine.begin() as conn:
        dry = collect(conn, home, as_of, keep_unpromoted=2, keep_days=30, now=NOW, dry_run=True)
    assert dry.versions == [1, 2, 3] and dry.reports == [str(reports / "report-2024-01-05.html")]
    assert all(path.exists() for path in paths.values())  # a dry run deletes nothing
    assert dry.bytes_freed == 3 * 1000 + len("<!doctype html>")

    with engine.begin() as conn:
        done = collect(conn, home, as_of, keep_unpromoted=2, keep_days=30, now=NOW)
    assert done.summary() == dry.summary().model_copy(update={"dry_run": False})
    assert sorted(v for v, path in paths.items() if path.exists()) == [4, 5, 6, 7, 8]
    assert sorted(p.name for p in reports.iterdir()) == [
        "report-2024-02-10.html",
        "report-2024-02-20.html",
    ]
    with engine.connect() as conn:
        rows = {
            row.version: row
            for row in conn.execute(
                sa.select(models.c.version, models.c.files_deleted_at, models.c.fingerprint)
            )
        }
        # An identical training would not reuse a version without files.
        assert find_model_by_fingerprint(conn, f"{1:064d}") is None
    for version in (1, 2, 3):
        assert rows[version].files_deleted_at is not None
        assert rows[version].fingerprint == retired_fingerprint(f"{version:064d}")
    assert all(rows[v].files_deleted_at is None for v in (4, 5, 6, 7, 8))

    # Idempotent: nothing more goes as of the same date.
    with engine.begin() as conn:
        again = collect(conn, home, as_of, keep_unpromoted=2, keep_days=30, now=NOW)
    assert (again.versions, again.reports, again.bytes_freed) == ([], [], 0)

    # Keeping everything is a policy too: nothing goes, however large the numbers.
    with engine.begin() as conn:
        none = collect(conn, home, as_of, keep_unpromoted=10**6, keep_days=10**9, now=NOW)
    assert (none.versions, none.reports) == ([], [])
