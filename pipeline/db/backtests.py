"""Writes and reads of ``backtest_runs`` and ``backtest_metrics``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import backtest_metrics, backtest_runs


def replace_backtest(conn: Connection, run: Mapping[str, Any], metrics: pd.DataFrame) -> int:
    """Store a run and its metrics; a run with the same id is replaced (its first
    ``created_at`` kept), so rerunning the same backtest leaves one copy."""
    run_id = run["run_id"]
    conn.execute(sa.delete(backtest_metrics).where(backtest_metrics.c.run_id == run_id))
    exists = conn.execute(
        sa.select(backtest_runs.c.run_id).where(backtest_runs.c.run_id == run_id)
    ).first()
    if exists:
        values = {key: value for key, value in run.items() if key not in ("run_id", "created_at")}
        conn.execute(
            sa.update(backtest_runs).where(backtest_runs.c.run_id == run_id).values(values)
        )
    else:
        conn.execute(sa.insert(backtest_runs), [dict(run)])
    columns = [column.name for column in backtest_metrics.columns]
    # Metrics may be NaN or None (no interval, no naive error): stored as NULL.
    floats = [
        column.name for column in backtest_metrics.columns if isinstance(column.type, sa.Double)
    ]
    rows = []
    for record in metrics.to_dict("records"):
        row = {name: record.get(name) for name in columns}
        row["run_id"] = run_id
        for name in floats:
            value = row[name]
            row[name] = None if value is None or pd.isna(value) else float(value)
        row["n"] = int(row["n"])
        high_vol = row["n_high_vol"]
        row["n_high_vol"] = None if high_vol is None or pd.isna(high_vol) else int(high_vol)
        row["fold"] = int(row["fold"])
        row[c.HORIZON] = int(row[c.HORIZON])
        row["is_default"] = bool(row["is_default"])
        rows.append(row)
    if rows:
        conn.execute(sa.insert(backtest_metrics), rows)
    return len(rows)


def read_backtest_metrics(conn: Connection, run_id: str) -> pd.DataFrame:
    """The metrics of one run, in key order."""
    query = (
        sa.select(backtest_metrics)
        .where(backtest_metrics.c.run_id == run_id)
        .order_by(
            backtest_metrics.c.model,
            backtest_metrics.c[c.TICKER],
            backtest_metrics.c.fold,
            backtest_metrics.c[c.HORIZON],
        )
    )
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=backtest_metrics.c.keys())
