"""``price_revisions``: the triggers on ``prices`` record a ticker whose closes change
within the span of its sequence file, on SQLite, PostgreSQL and MariaDB, in a new
database and in one upgraded from the revision before."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import pipeline.db.prices as prices_module
from pipeline import columns as c
from pipeline.db.prices import upsert_prices
from pipeline.db.schema import prices
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


# ------------------------------------------------------------------ the triggers set aside
# On SQLite ``upsert_prices`` drops the triggers for a write they would record nothing
# of, and recreates them; elsewhere it never does. Either way the outcome is the one
# the triggers give (``keep_triggers=True``).

DAYS = [dt.date(2024, 2, 26), dt.date(2024, 2, 27), dt.date(2024, 2, 28), THROUGH]
AFTER = [dt.date(2024, 3, 4), dt.date(2024, 3, 5)]


@pytest.fixture(autouse=True)
def _small_writes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows here are few: set the triggers aside for a single row."""
    monkeypatch.setattr(prices_module, "SET_ASIDE_MIN_ROWS", 1)


@pytest.fixture
def statements(portable_engine: Engine) -> Iterator[list[str]]:
    """Every statement run through SQLAlchemy on ``portable_engine``."""
    seen: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(portable_engine, "before_cursor_execute", spy)
    yield seen
    sa.event.remove(portable_engine, "before_cursor_execute", spy)


def _set_aside(statements: list[str]) -> bool:
    return any(statement.startswith("DROP TRIGGER") for statement in statements)


def _trigger_text(conn: sa.Connection) -> dict[str, str]:
    """The triggers' definitions on SQLite (empty elsewhere)."""
    if conn.dialect.name != "sqlite":
        return {}
    query = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'prices'"
    return dict(conn.exec_driver_sql(query).all())


def _state(conn: sa.Connection) -> tuple[list[tuple], dict[str, dt.date], bool, dict[str, str]]:
    stored = conn.execute(sa.select(prices).order_by(prices.c.ticker, prices.c.trade_date))
    return (
        [tuple(row) for row in stored],
        price_revisions_of(conn),
        revision_triggers_present(conn),
        _trigger_text(conn),
    )


def _both_ways(engine: Engine, frame: pd.DataFrame, statements: list[str]) -> tuple:
    """The state after ``upsert_prices`` of ``frame`` as it is and with the triggers kept
    (each rolled back), and whether the first set the triggers aside."""
    found = []
    for keep in (False, True):
        statements.clear()
        with engine.connect() as conn, conn.begin() as transaction:
            upsert_prices(conn, frame, keep_triggers=keep)
            found.append((_state(conn), _set_aside(statements)))
            transaction.rollback()
    (bypassed, set_aside), (kept, never) = found
    assert not never
    assert bypassed == kept
    return bypassed, set_aside


def _history(engine: Engine, files: str = "AB") -> None:
    with engine.begin() as conn:
        upsert_prices(conn, _prices([(t, d, 10.0 + i) for t in "AB" for i, d in enumerate(DAYS)]))
        upsert_sequence_files(conn, [_file_row(ticker) for ticker in files])


def test_a_first_load_sets_the_triggers_aside_and_records_nothing(
    portable_engine: Engine, statements: list[str]
) -> None:
    frame = _prices([(t, d, 10.0 + i) for t in "AB" for i, d in enumerate(DAYS)])
    with portable_engine.connect() as conn:
        before = _trigger_text(conn)
    (rows, revisions, present, text), set_aside = _both_ways(portable_engine, frame, statements)
    assert len(rows) == 8 and revisions == {} and present and text == before
    assert set_aside == (portable_engine.dialect.name == "sqlite")
    statements.clear()
    with portable_engine.begin() as conn:
        upsert_prices(conn, frame)
    assert _set_aside(statements) == (portable_engine.dialect.name == "sqlite")
    with portable_engine.begin() as conn:
        assert len(_state(conn)[0]) == 8
        assert price_revisions_of(conn) == {}
        assert revision_triggers_present(conn) and _trigger_text(conn) == before
        # They still record: a changed close within a file's span.
        upsert_sequence_files(conn, [_file_row("A")])
        upsert_prices(conn, _prices([("A", DAYS[1], 50.0)], source="b.csv"))
        assert price_revisions_of(conn) == {"A": DAYS[1]}


def test_rows_after_every_files_span_set_the_triggers_aside(
    portable_engine: Engine, statements: list[str]
) -> None:
    _history(portable_engine)
    # New days of A and B, and C, which has no file (even within the others' spans).
    frame = _prices([(t, d, 20.0) for t in "AB" for d in AFTER] + [("C", DAYS[0], 5.0)])
    (rows, revisions, present, _), set_aside = _both_ways(portable_engine, frame, statements)
    assert len(rows) == 13 and revisions == {} and present
    assert set_aside == (portable_engine.dialect.name == "sqlite")


@pytest.mark.parametrize(
    ("revised", "expected", "stored"),
    [
        (("B", DAYS[2], 99.0), {"B": DAYS[2]}, 14),  # a changed close
        (("B", dt.date(2024, 2, 23), 9.0), {"B": dt.date(2024, 2, 23)}, 15),  # one added
        (("B", THROUGH, 13.0), {}, 14),  # the same close, on the last day of the span
    ],
    ids=["changed", "added", "unchanged"],
)
def test_a_row_within_a_files_span_keeps_the_triggers(
    portable_engine: Engine,
    statements: list[str],
    revised: tuple,
    expected: dict[str, dt.date],
    stored: int,
) -> None:
    _history(portable_engine)
    frame = _prices([(t, d, 20.0) for t in "ABC" for d in AFTER] + [revised], source="b.csv")
    (rows, revisions, present, _), set_aside = _both_ways(portable_engine, frame, statements)
    assert revisions == expected and present and not set_aside
    assert len(rows) == stored


def test_a_failed_write_leaves_the_triggers_and_the_table(
    portable_engine: Engine, statements: list[str]
) -> None:
    _history(portable_engine)
    rows = [(t, d, 20.0 + i) for t in "ABC" for i, d in enumerate(AFTER)]
    rows[3] = ("B", AFTER[1], np.nan)  # no close: refused, after A's rows are written
    with portable_engine.connect() as conn:
        before = _state(conn)
    statements.clear()
    with pytest.raises(sa.exc.IntegrityError), portable_engine.begin() as conn:
        upsert_prices(conn, _prices(rows))
    assert _set_aside(statements) == (portable_engine.dialect.name == "sqlite")
    with portable_engine.connect() as conn:
        assert _state(conn) == before
    # A caller that goes on after the error in the same transaction has them too.
    with portable_engine.begin() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            upsert_prices(conn, _prices(rows))
        if conn.dialect.name != "sqlite":
            return  # no trigger was touched
        assert revision_triggers_present(conn) and _trigger_text(conn) == before[3]
        upsert_prices(conn, _prices([("A", DAYS[0], 1.0)], source="b.csv"))
        assert price_revisions_of(conn) == {"A": DAYS[0]}


def test_missing_triggers_stay_missing(portable_engine: Engine, statements: list[str]) -> None:
    with portable_engine.begin() as conn:
        suffix = " ON prices" if conn.dialect.name == "postgresql" else ""
        conn.execute(sa.text(f"DROP TRIGGER prices_revised_delete{suffix}"))
        others = _trigger_text(conn)
    statements.clear()
    with portable_engine.begin() as conn:
        upsert_prices(conn, _prices([(t, d, 10.0) for t in "AB" for d in DAYS]))
    assert not _set_aside(statements)
    with portable_engine.connect() as conn:
        assert not revision_triggers_present(conn)
        assert _trigger_text(conn) == others


def test_without_the_engines_own_transactions_the_triggers_stay(
    portable_engine: Engine, statements: list[str]
) -> None:
    """An engine not made by ``pipeline.db.engine`` (the sqlite3 module begins a
    transaction only before a row is written): a drop would commit on its own, so
    the triggers stay."""
    if portable_engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    plain = sa.create_engine(portable_engine.url)
    sa.event.listen(plain, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        with plain.begin() as conn:
            upsert_prices(conn, _prices([(t, d, 10.0) for t in "AB" for d in DAYS]))
            assert not _set_aside(statements)
        with plain.connect() as conn:
            assert revision_triggers_present(conn) and len(_state(conn)[0]) == 8
    finally:
        plain.dispose()


def test_a_few_rows_keep_the_triggers(
    portable_engine: Engine, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below ``SET_ASIDE_MIN_ROWS`` the drop and recreation would cost more than they save."""
    monkeypatch.setattr(prices_module, "SET_ASIDE_MIN_ROWS", 9)
    _history(portable_engine)
    frame = _prices([(t, d, 20.0) for t in "ABCD" for d in AFTER])
    assert not _both_ways(portable_engine, frame, statements)[1]
    bigger = _prices([(t, d, 20.0) for t in "ABCDE" for d in AFTER])
    assert _both_ways(portable_engine, bigger, statements)[1] == (
        portable_engine.dialect.name == "sqlite"
    )
