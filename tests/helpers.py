"""Helpers shared by tests: synthetic prices, file writers, table snapshots."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.schema import metadata
from pipeline.db.views import VIEWS
from pipeline.model.config import ModelConfig
from pipeline.sequences.config import SequenceConfig

#: Tiny but real settings for unit tests: 8 units, 1 epoch.
TINY_SEQUENCES = SequenceConfig(window=5, scaling="minmax", validation_fraction=0.2)
#: The same as settings, for flows and the command line.
TINY_OVERRIDES = {
    "window": 5,
    "validation_fraction": 0.2,
    "units": 8,
    "epochs": 1,
    "batch_size": 16,
    "finetune_epochs": 1,
    "seed": 7,
}

TINY_MODEL = ModelConfig(units=8, epochs=1, batch_size=16, finetune_epochs=1, seed=7, horizon=2)


def synthetic_prices(
    tickers: tuple[str, ...] = ("AAA", "BBB"),
    start: str = "2024-01-01",
    days: int = 60,
    seed: int = 0,
) -> pd.DataFrame:
    """Geometric Brownian motion closes on business days, in the normalised long layout."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=days)
    parts = []
    for index, ticker in enumerate(tickers):
        steps = rng.normal(0.0005, 0.02, size=days)
        closes = (20.0 + 10 * index) * np.exp(np.cumsum(steps))
        parts.append(pd.DataFrame({c.TICKER: ticker, c.TRADE_DATE: dates, c.CLOSE: closes}))
    frame = pd.concat(parts, ignore_index=True)
    for field in c.OPTIONAL_PRICE_FIELDS:
        frame[field] = np.nan
    frame[c.SOURCE] = "synthetic"
    return frame.loc[:, list(c.PRICE_COLUMNS)]


def write_long_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a price frame as a long CSV (``ticker,date,close``)."""
    out = frame.loc[:, [c.TICKER, c.TRADE_DATE, c.CLOSE]].rename(columns={c.TRADE_DATE: "date"})
    out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False)
    return path


def table_snapshot(engine: Engine, exclude: tuple[str, ...] = ()) -> dict[str, list[tuple]]:
    """Every row of every pricecast table (but ``exclude``), sorted, for before/after
    comparisons."""
    snapshot = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in exclude:
                continue
            rows = conn.execute(sa.select(table)).all()
            snapshot[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    return snapshot


def last_date(frame: pd.DataFrame) -> dt.date:
    """The newest trade date of a price frame."""
    return pd.Timestamp(frame[c.TRADE_DATE].max()).date()


def drop_everything(engine: Engine) -> None:
    """Remove every pricecast view and table."""
    with engine.begin() as conn:
        for view in reversed(VIEWS):
            conn.execute(sa.text(f"DROP VIEW IF EXISTS {view}"))
        metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


def terminate_lock_backend(admin_url: str) -> None:
    """Kill, from an admin connection, the PostgreSQL session holding the pipeline lock
    (as a lost network or a server restart would end it)."""
    from pipeline.db.engine import connect

    admin = connect(admin_url)
    try:
        with admin.connect() as conn:
            killed = (
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks "
                        "WHERE locktype = 'relation' AND relation = 'pipeline_lock'::regclass "
                        "AND mode = 'ExclusiveLock' AND granted AND pid <> pg_backend_pid()"
                    )
                )
                .scalars()
                .all()
            )
        assert killed == [True]
    finally:
        admin.dispose()


def spy_on_decoded_files(monkeypatch: Any) -> list[str]:
    """The names of the sequence files ``read_sequences`` decodes (rather than take the
    windows the sequences stage handed over), as it decodes them."""
    from pipeline.sequences import read

    decoded: list[str] = []
    real = read.read_sequence_windows

    def spy(path: Path, sha256: str | None, window: int) -> Any:
        decoded.append(path.name)
        return real(path, sha256, window)

    monkeypatch.setattr(read, "read_sequence_windows", spy)
    return decoded
