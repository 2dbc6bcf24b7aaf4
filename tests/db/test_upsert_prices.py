"""``upsert_prices`` on SQLite, PostgreSQL and MariaDB: contents, precedence, reruns, counts.

Tests take ``portable_engine`` (``conftest.py``), which runs them on all three.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import columns as c
from pipeline.db import upsert
from pipeline.db.bulk import pgbinary, postgresql
from pipeline.db.prices import upsert_prices
from pipeline.db.schema import prices

NAN = np.nan


@pytest.fixture
def engine(portable_engine: Engine) -> Engine:
    """Every test of this module on SQLite, PostgreSQL and MariaDB."""
    return portable_engine


def price_frame(*rows: tuple) -> pd.DataFrame:
    """A price frame from ``(ticker, date, open, high, low, close, adj_close, volume, source)``."""
    frame = pd.DataFrame(list(rows), columns=list(c.PRICE_COLUMNS))
    frame[c.TRADE_DATE] = pd.to_datetime(frame[c.TRADE_DATE])
    return frame


def expected(*rows: tuple) -> list[tuple]:
    """Rows as the table returns them: dates as ``date``, NaN as ``None``."""
    return sorted(
        tuple(
            dt.date.fromisoformat(value)
            if index == 1
            else (None if isinstance(value, float) and np.isnan(value) else value)
            for index, value in enumerate(row)
        )
        for row in rows
    )


def stored(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        result = conn.execute(sa.select(prices).order_by(prices.c.ticker, prices.c.trade_date))
        return [tuple(row) for row in result]


def load(engine: Engine, frame: pd.DataFrame) -> int:
    with engine.begin() as conn:
        return upsert_prices(conn, frame)


def row_versions(engine: Engine) -> dict[tuple, str] | None:
    """PostgreSQL: the transaction that wrote each row's current version (``xmin``)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        result = conn.execute(sa.text("SELECT ticker, trade_date, xmin::text FROM prices"))
        return {(ticker, day): xmin for ticker, day, xmin in result}


A1 = ("AAA", "2024-01-02", 10.0, 11.0, 9.5, 10.5, 10.4, 1000.0, "a.csv")
A2 = ("AAA", "2024-01-03", NAN, NAN, NAN, 10.75, NAN, NAN, "a.csv")
B1 = ("BBB", "2024-01-02", 20.0, 21.0, 19.0, 20.5, 20.5, 2000.0, "a.csv")


def test_a_first_load_stores_every_row_as_given(engine: Engine) -> None:
    assert load(engine, price_frame(B1, A2, A1)) == 3
    assert stored(engine) == expected(A1, A2, B1)


def test_python_dates_and_missing_values_as_none_load_the_same(engine: Engine) -> None:
    frame = price_frame(A1, A2, B1)
    frame[c.TRADE_DATE] = frame[c.TRADE_DATE].dt.date.astype(object)
    frame[c.OPEN] = frame[c.OPEN].astype(object).where(frame[c.OPEN].notna(), None)
    assert load(engine, frame) == 3
    assert stored(engine) == expected(A1, A2, B1)


def test_the_last_of_duplicate_rows_in_one_frame_wins(engine: Engine) -> None:
    first = ("AAA", "2024-01-02", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "a.csv")
    last = ("AAA", "2024-01-02", 2.0, NAN, 2.0, 2.0, 2.0, 2.0, "a.csv")
    assert load(engine, price_frame(first, B1, last, A2)) == 3
    assert stored(engine) == expected(last, A2, B1)


def test_an_identical_second_load_writes_nothing(engine: Engine) -> None:
    frame = price_frame(A1, A2, B1)
    load(engine, frame)
    before, versions = stored(engine), row_versions(engine)
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        changes = raw.total_changes if engine.dialect.name == "sqlite" else None
        assert upsert_prices(conn, frame) == 3
        if changes is not None:
            assert raw.total_changes == changes  # no row inserted or updated
    assert stored(engine) == before
    assert row_versions(engine) == versions  # PostgreSQL: no new row version, no dead tuple


def test_changed_rows_are_updated_and_only_those(engine: Engine) -> None:
    load(engine, price_frame(A1, A2, B1))
    versions = row_versions(engine)
    changed = ("AAA", "2024-01-03", 1.0, NAN, NAN, 10.8, NAN, 5.0, "a.csv")
    now_missing = ("BBB", "2024-01-02", NAN, 21.0, 19.0, 20.5, 20.5, 2000.0, "a.csv")
    new = ("CCC", "2024-01-02", NAN, NAN, NAN, 3.0, NAN, NAN, "a.csv")
    assert load(engine, price_frame(A1, changed, now_missing, new)) == 4
    assert stored(engine) == expected(A1, changed, now_missing, new)
    after = row_versions(engine)
    if versions is not None and after is not None:
        key = ("AAA", dt.date(2024, 1, 2))
        assert after[key] == versions[key]
        assert after[("AAA", dt.date(2024, 1, 3))] != versions[("AAA", dt.date(2024, 1, 3))]


def test_files_give_the_same_table_in_either_order(engine: Engine) -> None:
    """The later file name wins on the rows two files share, whichever is loaded last."""
    a = price_frame(
        ("AAA", "2024-01-02", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "prices-2024-01-02.csv"),
        ("AAA", "2024-01-03", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "prices-2024-01-02.csv"),
    )
    b = price_frame(
        ("AAA", "2024-01-03", 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, "prices-2024-01-03.csv"),
        ("AAA", "2024-01-04", 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, "prices-2024-01-03.csv"),
    )
    want = expected(
        ("AAA", "2024-01-02", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "prices-2024-01-02.csv"),
        ("AAA", "2024-01-03", 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, "prices-2024-01-03.csv"),
        ("AAA", "2024-01-04", 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, "prices-2024-01-03.csv"),
    )
    assert (load(engine, a), load(engine, b)) == (2, 2)
    assert stored(engine) == want
    with engine.begin() as conn:
        conn.execute(sa.delete(prices))
    assert (load(engine, b), load(engine, a)) == (2, 2)
    assert stored(engine) == want


def test_file_names_compare_as_plain_strings(engine: Engine) -> None:
    """Byte order, not the database's collation: upper case sorts before lower case."""
    lower = ("AAA", "2024-01-02", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "a.csv")
    upper = ("AAA", "2024-01-02", 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, "B.csv")
    load(engine, price_frame(lower))
    load(engine, price_frame(upper))  # "B.csv" < "a.csv": the stored row stays
    assert stored(engine) == expected(lower)


def test_a_feed_row_replaces_a_file_row_and_a_file_row_replaces_a_feed_row(
    engine: Engine,
) -> None:
    file_row = ("AAA", "2024-01-02", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "zz-latest.csv")
    feed_row = ("AAA", "2024-01-02", 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, "https://host/x.csv?s=AAA")
    other_feed = ("AAA", "2024-01-02", 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, "yahoo://AAA")
    early_file = ("AAA", "2024-01-02", 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, "0-first.csv")
    load(engine, price_frame(file_row))
    load(engine, price_frame(feed_row))
    assert stored(engine) == expected(feed_row)
    load(engine, price_frame(other_feed))
    assert stored(engine) == expected(other_feed)
    load(engine, price_frame(early_file))
    assert stored(engine) == expected(early_file)
    load(engine, price_frame(file_row))
    assert stored(engine) == expected(file_row)


def test_a_stored_row_without_source_is_replaced(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(prices),
            [{c.TICKER: "AAA", c.TRADE_DATE: dt.date(2024, 1, 2), c.CLOSE: 5.0, c.SOURCE: None}],
        )
    load(engine, price_frame(A1))
    assert stored(engine) == expected(A1)


def test_a_rejected_row_raises_and_the_callers_transaction_writes_nothing(
    engine: Engine,
) -> None:
    no_close = ("BBB", "2024-01-02", 1.0, 1.0, 1.0, NAN, 1.0, 1.0, "a.csv")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        upsert_prices(conn, price_frame(A1, no_close))
    assert stored(engine) == []


def test_an_empty_frame_writes_nothing_and_bad_frames_are_refused(engine: Engine) -> None:
    assert load(engine, price_frame()) == 0
    with pytest.raises(ValueError, match="lack column"):
        load(engine, price_frame(A1).drop(columns=[c.SOURCE]))
    no_ticker = price_frame(A1)
    no_ticker[c.TICKER] = None
    with pytest.raises(ValueError, match="ticker has missing values"):
        load(engine, no_ticker)
    assert stored(engine) == []


def test_many_small_batches_give_the_same_table(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches and COPY chunks of a few rows: new, changed and unchanged rows mixed."""
    monkeypatch.setitem(upsert.BULK_BATCH_ROWS, engine.dialect.name, 7)
    monkeypatch.setattr(pgbinary, "_COPY_CHUNK_ROWS", 3)
    monkeypatch.setattr(postgresql, "_READ_ROWS", 2)  # PostgreSQL: several reads per batch
    monkeypatch.setattr(postgresql, "_PG_MERGE_BIG", 1)  # and its large-merge settings
    days = pd.bdate_range("2024-01-01", periods=12)
    rng = np.random.default_rng(3)

    def frame(tickers: list[str], source: str) -> pd.DataFrame:
        rows = [
            (ticker, day.strftime("%Y-%m-%d"), *rng.uniform(1, 2, 6).round(3), source)
            for ticker in tickers
            for day in days
        ]
        return price_frame(*rows)

    first = frame(["AAA", "BB", "C"], "1.csv")
    load(engine, first)
    second = frame(["BB", "DDDD"], "2.csv")  # BB's rows replaced, DDDD's new
    second.loc[second.index[::5], c.VOLUME] = NAN
    unchanged = first[first[c.TICKER] == "AAA"]  # AAA unchanged, C absent
    assert load(engine, pd.concat([second, unchanged])) == 36
    want = pd.concat([first[first[c.TICKER] == "C"], second, unchanged])
    assert stored(engine) == expected(
        *(
            (row[0], row[1].strftime("%Y-%m-%d"), *row[2:])
            for row in want.itertuples(index=False, name=None)
        )
    )


def test_postgres_falls_back_when_another_writer_inserts_the_same_keys(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys stored after the checks (a concurrent writer): the rows are merged, not lost."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    load(engine, price_frame(A1, A2))
    versions = row_versions(engine)
    assert versions is not None
    # The range check sees no stored row: the batch is copied straight in, and that fails.
    monkeypatch.setattr(postgresql._PostgresWriter, "may_hold_keys", lambda *_: False)
    changed = ("AAA", "2024-01-03", 1.0, NAN, NAN, 10.8, NAN, 5.0, "a.csv")
    assert load(engine, price_frame(A1, changed, B1)) == 3
    assert stored(engine) == expected(A1, changed, B1)
    key = ("AAA", dt.date(2024, 1, 2))
    assert row_versions(engine)[key] == versions[key]  # A1 was not rewritten
    # Reading back sees no stored row: every row looks new, the COPY fails again.
    monkeypatch.setattr(postgresql._PostgresWriter, "may_hold_keys", lambda *_: True)
    monkeypatch.setattr(postgresql._PostgresWriter, "read_stored", lambda *_: [])
    again = ("AAA", "2024-01-02", 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, "b.csv")
    new = ("CCC", "2024-01-02", NAN, NAN, NAN, 3.0, NAN, NAN, "b.csv")
    assert load(engine, price_frame(again, new)) == 2
    assert stored(engine) == expected(again, changed, B1, new)


def test_a_commit_on_the_callers_connection_keeps_the_rows(engine: Engine) -> None:
    """``engine.connect()`` then ``commit()``: the rows are committed, as with ``execute``."""
    with engine.connect() as conn:
        assert upsert_prices(conn, price_frame(A1, A2)) == 2
        conn.commit()
    with engine.connect() as conn:
        upsert_prices(conn, price_frame(B1))  # closed without a commit: rolled back
    assert stored(engine) == expected(A1, A2)


def test_stored_rows_between_the_dates_of_a_load_are_left_alone(engine: Engine) -> None:
    """Rows a load does not hold keep their values, whether near its dates or far from them."""
    days = [day.strftime("%Y-%m-%d") for day in pd.bdate_range("2024-01-01", periods=40)]
    first = [
        ("AAA", day, 1.0, 1.0, 1.0, float(index), 1.0, 1.0, "a.csv")
        for index, day in enumerate(days)
    ]
    load(engine, price_frame(*first))
    versions = row_versions(engine)
    # Days 0-2, 5-6 (a short gap) and 30-31 (a long one); day 5 changes, 31 moves to b.csv.
    picked = [0, 1, 2, 5, 6, 30, 31]
    second = [first[index] for index in picked]
    second[3] = ("AAA", days[5], 9.0, 1.0, 1.0, 5.0, 1.0, 1.0, "a.csv")
    second[6] = ("AAA", days[31], 1.0, 1.0, 1.0, 31.0, 1.0, 1.0, "b.csv")
    new = ("AAA", "2024-03-30", 1.0, 1.0, 1.0, 99.0, 1.0, 1.0, "a.csv")  # a Saturday
    assert load(engine, price_frame(*second, new)) == 8
    want = [*first]
    want[5], want[31] = second[3], second[6]
    assert stored(engine) == expected(*want, new)
    after = row_versions(engine)
    if versions is not None and after is not None:
        rewritten = {key for key in versions if after[key] != versions[key]}
        assert rewritten == {("AAA", dt.date.fromisoformat(days[i])) for i in (5, 31)}


def test_sources_alternating_within_a_ticker(engine: Engine) -> None:
    """Each row keeps its own source: a reload changes nothing, a newer file replaces its rows."""
    days = [day.strftime("%Y-%m-%d") for day in pd.bdate_range("2024-01-01", periods=12)]
    sources = ["a.csv", "b.csv", None, "https://feed/x"]
    first = [
        ("AAA", day, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, sources[index % 4])
        for index, day in enumerate(days)
    ]
    load(engine, price_frame(*first))
    versions = row_versions(engine)
    assert load(engine, price_frame(*first)) == 12
    assert stored(engine) == expected(*first)
    assert row_versions(engine) == versions
    newer = [(*row[:-1], "c.csv") for row in first]
    load(engine, price_frame(*newer))
    assert stored(engine) == expected(*newer)


@pytest.mark.parametrize("missing_share", [0.002, 0.3])
def test_many_rows_with_scattered_missing_values_and_ticker_lengths(
    engine: Engine, missing_share: float
) -> None:
    """Rows of many shapes (NULLs, text lengths): loaded, reloaded untouched, then changed."""
    rng = np.random.default_rng(11)
    tickers = ["A", "BB", "CCC", "DDDD", "EEEEE", "FFFFFFFFFFFFFFFF"]
    days = pd.bdate_range("2023-01-02", periods=400)
    frame = pd.DataFrame(
        {
            c.TICKER: np.repeat(tickers, len(days)),
            c.TRADE_DATE: np.tile(days.to_numpy(), len(tickers)),
            **{
                name: rng.uniform(1, 100, len(tickers) * len(days))
                for name in c.PRICE_COLUMNS[2:-1]
            },
            c.SOURCE: rng.choice(["x.csv", "longer-name.csv"], len(tickers) * len(days)),
        }
    )
    for name in (c.OPEN, c.HIGH, c.LOW, c.ADJ_CLOSE, c.VOLUME):
        frame.loc[rng.random(len(frame)) < missing_share, name] = NAN
    frame = frame.sample(frac=1.0, random_state=1)  # any order

    def rows(data: pd.DataFrame) -> list[tuple]:
        return expected(
            *(
                (row[0], row[1].strftime("%Y-%m-%d"), *row[2:])
                for row in data.itertuples(index=False, name=None)
            )
        )

    assert load(engine, frame) == len(frame)
    assert stored(engine) == rows(frame)
    versions = row_versions(engine)
    assert load(engine, frame) == len(frame)
    assert row_versions(engine) == versions
    changed = frame.copy()
    picked = rng.random(len(frame)) < 0.05
    changed.loc[picked, c.CLOSE] += 1.0
    changed.loc[picked & (rng.random(len(frame)) < 0.5), c.OPEN] = NAN
    changed[c.SOURCE] = "z.csv"  # later than both: every row may be replaced
    changed.loc[~picked, c.SOURCE] = frame.loc[~picked, c.SOURCE]
    load(engine, changed)
    assert stored(engine) == rows(changed)
    after = row_versions(engine)
    if versions is not None and after is not None:
        rewritten = sum(after[key] != versions[key] for key in versions)
        assert rewritten == int(picked.sum())


def test_bulk_upsert_on_tables_of_other_shapes(engine: Engine) -> None:
    """Beyond prices: a key without a date, and a date outside the key."""
    meta = sa.MetaData()
    by_name = sa.Table(
        "pricecast_test_by_name",
        meta,
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("day", sa.Date),
        sa.Column("value", sa.Double),
    )
    by_day = sa.Table(
        "pricecast_test_by_day",
        meta,
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("seen", sa.Date),
        sa.Column("value", sa.Double),
        sa.Column("note", sa.String(16)),
    )
    meta.create_all(engine)
    try:
        for table, key in ((by_name, ["name", "kind"]), (by_day, ["name", "day"])):
            names = [column.name for column in table.columns]
            day = pd.Timestamp("2024-01-02")
            frame = pd.DataFrame(
                [
                    {"name": "a", "kind": "x", "day": day, "seen": day, "value": 1.0, "note": "n"},
                    {
                        "name": "a",
                        "kind": "y",
                        "day": day + pd.Timedelta(days=1),
                        "seen": day,
                        "value": NAN,
                    },
                    {"name": "b", "kind": "x", "day": day, "seen": day, "value": 2.0},
                ]
            )[names]

            def write(data: pd.DataFrame, table: sa.Table = table) -> int:
                with engine.begin() as conn:
                    return upsert.bulk_upsert(conn, table, data)

            def read(table: sa.Table = table, key: list[str] = key) -> list[tuple]:
                with engine.connect() as conn:
                    query = sa.select(table).order_by(*(table.c[name] for name in key))
                    return [tuple(row) for row in conn.execute(query)]

            assert write(frame) == 3
            first = read()
            assert len(first) == 3
            assert write(frame) == 3
            assert read() == first
            changed = frame.copy()
            changed.loc[1, "value"] = 5.0
            if "seen" in names:
                changed.loc[0, "seen"] = day + pd.Timedelta(days=7)
            write(changed)
            after = read()
            assert after != first
            assert len(after) == 3
            assert 5.0 in [row[names.index("value")] for row in after]
    finally:
        meta.drop_all(engine)
