"""``price_revisions``: the triggers on ``prices`` record a ticker whose closes change
within the span of its sequence file, on SQLite, PostgreSQL and MariaDB, in a new
database and in one upgraded from the revision before."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db.prices import upsert_prices
from pipeline.db.sequences import (
    clear_price_revisions,
    price_revisions_of,
    revision_triggers_present,
    upsert_sequence_files,
)

THROUGH = dt.date(2024, 3, 1)


def _prices(rows: list[tuple[str, dt.date, float]], source: str = "a.csv") -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[c.TICKER, c.TRADE_DATE, c.CLOSE])
    frame[c.TRADE_DATE] = pd.to_datetime(frame[c.TRADE_DATE])
    for name in (c.OPEN, c.HIGH, c.LOW, c.ADJ_CLOSE, c.VOLUME):
        frame[name] = np.nan
    frame[c.SOURCE] = source
    return frame[list(c.PRICE_COLUMNS)]


def _file_row(ticker: str) -> dict:
    return {
        c.TICKER: ticker,
        c.AS_OF_DATE: THROUGH,
        "data_through": THROUGH,
        "window": 2,
        "scaling": "minmax",
        "validation_fraction": 0.1,
        "price_field": "close",
        "scaler_params": {"min": 1.0, "max": 2.0},
        "fit_start": dt.date(2024, 2, 26),
        "fit_end": THROUGH,
        "train_windows": 1,
        "validation_windows": 1,
        "file_path": f"/{ticker}.parquet",
        "sha256": "0" * 64,
    }


def _scenario(engine: Engine) -> None:
    days = [dt.date(2024, 2, 26), dt.date(2024, 2, 27), dt.date(2024, 2, 28), THROUGH]
    with engine.begin() as conn:
        # Loading before any file is built records nothing.
        upsert_prices(conn, _prices([(t, d, 10.0 + i) for t in "AB" for i, d in enumerate(days)]))
        assert price_revisions_of(conn) == {}
        upsert_sequence_files(conn, [_file_row("A"), _file_row("B")])
    with engine.begin() as conn:
        # A new day, and the same rows again: no revision.
        upsert_prices(conn, _prices([("A", dt.date(2024, 3, 4), 20.0), ("B", days[0], 10.0)]))
        assert price_revisions_of(conn) == {}
        # A changed close within the span, then an earlier one: the earliest date.
        upsert_prices(conn, _prices([("A", days[2], 99.0)], source="b.csv"))
        assert price_revisions_of(conn) == {"A": days[2]}
        upsert_prices(conn, _prices([("A", days[1], 98.0)], source="b.csv"))
        upsert_prices(conn, _prices([("A", days[3], 97.0)], source="b.csv"))
        assert price_revisions_of(conn) == {"A": days[1]}
        # Only the source changed: the closes are the same.
        conn.execute(sa.text("UPDATE prices SET source = 'c.csv' WHERE ticker = 'B'"))
        assert price_revisions_of(conn) == {"A": days[1]}
        # A deleted close and a close added within the span, by hand.
        conn.execute(sa.text("DELETE FROM prices WHERE ticker = 'B' AND trade_date = '2024-02-28'"))
        assert price_revisions_of(conn) == {"A": days[1], "B": days[2]}
        clear_price_revisions(conn, ["A", "B"])
        assert price_revisions_of(conn) == {}
        upsert_prices(conn, _prices([("B", dt.date(2024, 2, 23), 5.0)]))
        assert price_revisions_of(conn) == {"B": dt.date(2024, 2, 23)}
        # A ticker without a file: nothing to rebuild.
        upsert_prices(conn, _prices([("C", days[0], 1.0)]))
        conn.execute(sa.text("UPDATE prices SET close = 2 WHERE ticker = 'C'"))
        assert price_revisions_of(conn) == {"B": dt.date(2024, 2, 23)}


def test_changes_within_a_files_span_are_recorded(portable_engine: Engine) -> None:
    _scenario(portable_engine)


@pytest.mark.parametrize("down", ["0012_trust_manifest_failed"])
def test_the_upgrade_makes_the_same_triggers(portable_engine: Engine, down: str) -> None:
    from alembic import command

    from pipeline.db.migrate import alembic_config, ensure_schema, head_revision

    with portable_engine.begin() as conn:
        command.downgrade(alembic_config(conn), down)
    with portable_engine.begin() as conn:
        assert "price_revisions" not in sa.inspect(conn).get_table_names()
    assert ensure_schema(portable_engine) == head_revision()
    _scenario(portable_engine)


def test_the_upgrade_rebuilds_every_file_once(portable_engine: Engine) -> None:
    """Closes changed before the triggers existed were not recorded: after the upgrade,
    every recorded file counts as revised from its first close."""
    from alembic import command

    from pipeline.db.migrate import alembic_config, ensure_schema

    with portable_engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0012_trust_manifest_failed")
    with portable_engine.begin() as conn:
        upsert_sequence_files(conn, [_file_row("A")])
    ensure_schema(portable_engine)
    with portable_engine.connect() as conn:
        assert price_revisions_of(conn) == {"A": dt.date(2024, 2, 26)}


def test_a_missing_trigger_is_seen(portable_engine: Engine) -> None:
    with portable_engine.begin() as conn:
        assert revision_triggers_present(conn)
        suffix = " ON prices" if conn.dialect.name == "postgresql" else ""
        conn.execute(sa.text(f"DROP TRIGGER prices_revised_delete{suffix}"))
        assert not revision_triggers_present(conn)
