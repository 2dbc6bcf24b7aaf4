"""Disk used by a long backfill, before and after retention.

Run ``python -m benchmarks.retention [--days-from 2018-01-12] [--to 2018-04-11]``: a
backfill on the bundled sample (``demo``) with retention switched off (tiny epochs: the
point is the files, not the model), the disk its home holds, then ``collect`` as of the
last day with the default policy, and the disk after; JSON in
``benchmarks/results/retention.json``.

Measured (2-core machine, 2026-12-01, 61 trading days): 60 model files and 61 reports,
12.89 MB, before; 7 model files and 22 reports, 5.32 MB, after (53 versions' files and 39
reports deleted, 7.6 MB); the backfill took 466 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_JSON = Path(__file__).parent / "results" / "retention.json"


def disk(home: Path) -> dict[str, float]:
    """Files and megabytes under ``home`` (Prefect's own folder left out)."""
    files = [p for p in home.rglob("*") if p.is_file() and "prefect" not in p.parts]
    models = [p for p in (home / "models").glob("model-v*")]
    reports = list((home / "reports").glob("*.html"))
    return {
        "model_files": len(models),
        "reports": len(reports),
        "megabytes": sum(p.stat().st_size for p in files) / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days-from", type=dt.date.fromisoformat, default=dt.date(2018, 1, 12))
    parser.add_argument("--to", type=dt.date.fromisoformat, default=dt.date(2018, 4, 11))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
        # The collection below runs outside any flow: its log lines stay local.
        os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        from flows.backfill import backfill
        from pipeline.db.migrate import open_database
        from pipeline.retention import collect

        url = f"sqlite:///{home / 'pricecast.db'}"
        started = time.perf_counter()
        result = backfill(
            start_date=args.days_from,
            end_date=args.to,
            sources=["demo"],
            database_url=url,
            home=str(home),
            overrides={
                "epochs": 2,
                "finetune_epochs": 1,
                "keep_unpromoted": 10**6,
                "keep_days": 10**6,
            },
        )
        seconds = time.perf_counter() - started
        before = disk(home)
        engine = open_database(url)
        with engine.begin() as conn:
            collected = collect(conn, home, args.to, now=dt.datetime.now(dt.UTC))
        engine.dispose()
        after = disk(home)
    record = {
        "days": len(result.runs),
        "backfill_seconds": seconds,
        "before": before,
        "after": after,
        "collected": collected.summary().model_dump(mode="json"),
    }
    print(f"{record['days']} trading days backfilled in {seconds:.0f} s")
    print(f"{'':8} {'model files':>11} {'reports':>8} {'MB':>7}")
    for name in ("before", "after"):
        row = record[name]
        print(f"{name:8} {row['model_files']:11d} {row['reports']:8d} {row['megabytes']:7.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2, default=str))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
