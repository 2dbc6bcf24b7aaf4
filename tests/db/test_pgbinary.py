"""``pipeline.db.bulk.pgbinary`` against PostgreSQL: what it encodes is what the server stores.

The price tests reach the encoder only with short ASCII tickers and recent
dates; these round-trip the values those never send: NULL and infinite
floats, dates before PostgreSQL's day zero and far after it, empty, long and
non-ASCII text, and rows of alternating shapes (which the encoder sends shape
by shape). And the arrays ``read_array`` decodes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.bulk.pgbinary import CopyEncoder, read_array
from pipeline.db.bulk.rows import prepare_rows
from pipeline.db.engine import connect

pytestmark = pytest.mark.postgres

NAN, INF = np.nan, np.inf
TABLE = sa.Table(
    "pricecast_test_pgbinary",
    sa.MetaData(),
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("value", sa.Double),
    sa.Column("note", sa.String),
)


@pytest.fixture
def conn(postgres_server_url: str) -> Iterator[Connection]:
    """A connection with an empty temporary copy of ``TABLE``, rolled back afterwards."""
    engine = connect(postgres_server_url)
    with engine.connect() as connection:
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {TABLE.name} (name text, day date, value float8, note text)"
        )
        yield connection
    engine.dispose()


def copy_and_read(conn: Connection, frame: pd.DataFrame, positions: slice | np.ndarray) -> list:
    """COPY the rows of ``frame`` at ``positions`` (in key order) and read the table back."""
    rows = prepare_rows(TABLE, frame, list(frame.columns))
    encoder = CopyEncoder(rows)
    statement = f"COPY {TABLE.name} ({', '.join(encoder.names)}) FROM STDIN (FORMAT BINARY)"
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for data in encoder.payload(positions):
            copy.write(data)
    query = f"SELECT name, day, value, note FROM {TABLE.name} ORDER BY name, day"
    return [tuple(row) for row in conn.exec_driver_sql(query)]


def as_stored(frame: pd.DataFrame) -> list[tuple]:
    """The rows as PostgreSQL returns them: dates as ``date``, NaN as ``None``, in key order."""
    return sorted(
        (name, day.date(), *(None if pd.isna(value) else value for value in rest))
        for name, day, *rest in frame.itertuples(index=False, name=None)
    )


def test_nulls_infinities_far_dates_and_any_text_round_trip(conn: Connection) -> None:
    frame = pd.DataFrame(
        [
            ("plain", "2024-01-02", 1.5, "a"),
            ("long", "2024-01-03", NAN, "x" * 100_000),
            ("unicode é 日本", "1999-12-31", -0.0, None),  # the day before day zero
            ("", "1900-01-01", INF, ""),
            ("far", "2200-06-30", -INF, "ß" * 3),
            ("tiny", "2000-01-01", 5e-324, "\u00e9" * 70_000),
        ],
        columns=["name", "day", "value", "note"],
    )
    frame["day"] = pd.to_datetime(frame["day"])
    stored = copy_and_read(conn, frame, slice(0, len(frame)))
    assert stored == as_stored(frame)
    assert [len(row[3]) for row in stored if row[0] in ("long", "tiny")] == [100_000, 70_000]


@pytest.mark.parametrize("gather", [False, True])
def test_rows_of_alternating_shapes_round_trip(conn: Connection, gather: bool) -> None:
    """NULLs and text lengths changing from row to row: every shape path of the encoder."""
    count = 200
    days = pd.bdate_range("2024-01-01", periods=count)
    frame = pd.DataFrame(
        {
            "name": "AAA",
            "day": days,
            "value": [NAN if index % 3 == 0 else index / 7 for index in range(count)],
            "note": [None if index % 5 == 0 else "n" * (index % 4) for index in range(count)],
        }
    )
    if gather:  # every other row, as the read-back's new rows are picked
        picked = np.arange(0, count, 2)
        assert copy_and_read(conn, frame, picked) == as_stored(frame.iloc[picked])
    else:
        assert copy_and_read(conn, frame, slice(0, count)) == as_stored(frame)


@pytest.mark.parametrize(
    ("sql_type", "kind", "values"),
    [
        ("int8", ">i8", [0, -1, 2**62, -(2**62), 7]),
        ("int4", ">i4", [0, -1, 2**31 - 1, -(2**31)]),
        ("float8", ">f8", [0.0, -1.5, 1e308, float("inf"), 5e-324]),
        ("int8", ">i8", []),
    ],
)
def test_read_array_decodes_array_send(
    conn: Connection, sql_type: str, kind: str, values: list
) -> None:
    data = conn.exec_driver_sql(
        f"SELECT array_send(%(values)s::{sql_type}[])", {"values": values}
    ).scalar_one()
    decoded = read_array(bytes(data), kind)
    assert decoded.dtype == np.dtype(kind)
    assert decoded.tolist() == values
