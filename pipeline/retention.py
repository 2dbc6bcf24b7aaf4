"""Retention: bound the disk a long-running pipeline uses.

Each training registers a version with its files, promoted or not, and each run
writes a report; left alone, a daily schedule or a backfill piles them up (a
7-day backfill left 8 model files for one champion). ``collect`` deletes:

* the files of **unpromoted** versions, except the newest ``keep_unpromoted``
  (a challenger that lost is kept a while for inspection);
* the files of **promoted** versions outside the newest champion's lineage (the
  champion and the versions it was fine-tuned from, back to its full retrain)
  whose data ends more than ``keep_days`` before the as-of date: champions of
  recent dates stay, so a recent as-of date can still be forecast again;
* reports dated more than ``keep_days`` before the as-of date.

Versions newer than the as-of date (a collection as of an earlier date) are
never touched. A collected version stays in ``models`` with its figures and
decision; ``files_deleted_at`` says when its files went, and its fingerprint
is retired, so an identical training registers a new version with files
instead of reusing one without. Sequence files are one per ticker, replaced in
place, so they need no collection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.models import lineage
from pipeline.db.schema import models
from pipeline.results import RetentionSummary

logger = logging.getLogger(__name__)

_REPORT = re.compile(r"^report-(\d{4}-\d{2}-\d{2})\.html$")


@dataclass
class Collection:
    """What a collection deleted (or, for a dry run, would delete)."""

    as_of: dt.date
    versions: list[int] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    dry_run: bool = False

    def summary(self) -> RetentionSummary:
        """Fields for logs and flow results."""
        return RetentionSummary(
            as_of=self.as_of,
            model_versions=self.versions,
            reports=self.reports,
            bytes_freed=self.bytes_freed,
            dry_run=self.dry_run,
        )


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return 0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def retired_fingerprint(fingerprint: str) -> str:
    """The fingerprint a collected version keeps: no training's, so none reuses it."""
    return hashlib.sha256(f"collected:{fingerprint}".encode()).hexdigest()


def collect(
    conn: Connection,
    home: Path,
    as_of: dt.date,
    *,
    keep_unpromoted: int = 2,
    keep_days: int = 30,
    now: dt.datetime,
    dry_run: bool = False,
) -> Collection:
    """Delete what the retention policy (module docstring) no longer keeps.

    Args:
        conn: an open connection; the caller owns the transaction.
        home: the pipeline's home folder (its ``reports`` folder is collected).
        as_of: the date the policy is applied as of.
        keep_unpromoted: unpromoted versions whose files are kept, newest first.
        keep_days: promoted versions outside the champion's lineage, and reports,
            are kept while their date is at most this many days before ``as_of``.
        now: recorded as ``files_deleted_at``.
        dry_run: report what would go, delete nothing.

    Raises:
        ValueError: a negative ``keep_unpromoted`` or ``keep_days``.
    """
    if keep_unpromoted < 0 or keep_days < 0:
        raise ValueError("keep_unpromoted and keep_days must be 0 or more")
    result = Collection(as_of=as_of, dry_run=dry_run)
    # A huge keep_days (retention off in effect) reaches back to the first date there is.
    horizon = as_of - dt.timedelta(days=min(keep_days, (as_of - dt.date.min).days))
    rows = [
        dict(row)
        for row in conn.execute(
            sa.select(models)
            .where(models.c.data_through <= as_of, models.c.files_deleted_at.is_(None))
            .order_by(models.c.version.desc())
        ).mappings()
    ]
    promoted = [row for row in rows if row["promoted"]]
    newest = max(promoted, key=lambda row: (row["data_through"], row["version"]), default=None)
    kept = {row["version"] for row in lineage(conn, newest["version"])} if newest else set()
    unpromoted = [row for row in rows if not row["promoted"]]
    kept.update(row["version"] for row in unpromoted[:keep_unpromoted])
    kept.update(row["version"] for row in promoted if row["data_through"] >= horizon)
    for row in rows:
        if row["version"] in kept:
            continue
        path = Path(row["file_path"])
        result.versions.append(row["version"])
        result.bytes_freed += _size(path)
        if dry_run:
            continue
        _remove(path)
        conn.execute(
            sa.update(models)
            .where(models.c.version == row["version"])
            .values(files_deleted_at=now, fingerprint=retired_fingerprint(row["fingerprint"]))
        )
    folder = home / "reports"
    for report in sorted(folder.glob("report-*.html")) if folder.is_dir() else []:
        match = _REPORT.match(report.name)
        if match is None or dt.date.fromisoformat(match.group(1)) >= horizon:
            continue
        result.reports.append(str(report))
        result.bytes_freed += _size(report)
        if not dry_run:
            report.unlink()
    result.versions.sort()
    if result.versions or result.reports:
        logger.info(
            "retention as of %s%s: model versions %s, %d reports, %.1f MB",
            as_of,
            " (dry run)" if dry_run else "",
            result.versions or "none",
            len(result.reports),
            result.bytes_freed / 1e6,
        )
    return result
