"""The manifest of inputs (``ingested_inputs``): what was read, its hash, its accounting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.db.schema import ingested_inputs
from pipeline.db.upsert import upsert_rows
from pipeline.files import sha256_bytes


def origin_key(origin: str) -> str:
    """The manifest key of a file path or URL."""
    return sha256_bytes(origin.encode())


def manifest_entry(conn: Connection, origin: str) -> dict[str, Any] | None:
    """The manifest row of ``origin``, or ``None`` when it was never ingested."""
    query = sa.select(ingested_inputs).where(ingested_inputs.c.origin_key == origin_key(origin))
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def is_unchanged(entry: Mapping[str, Any] | None, version: str, as_of: dt.date | None) -> bool:
    """Whether ingesting this content again, as of ``as_of``, would change nothing.

    True when the same content was ingested before and none of its rows was
    deferred to a later as-of date than the one it was ingested with.
    """
    if entry is None or entry["version"] != version:
        return False
    if entry["rows_deferred"] == 0:
        return True
    previous = entry["as_of_date"]
    return as_of is not None and previous is not None and as_of <= previous


def record_input(conn: Connection, row: Mapping[str, Any]) -> None:
    """Insert or replace the manifest row of one input."""
    upsert_rows(conn, ingested_inputs, [{"origin_key": origin_key(row["origin"]), **row}])


def read_manifest(conn: Connection) -> pd.DataFrame:
    """Every manifest row, by origin."""
    query = sa.select(ingested_inputs).order_by(ingested_inputs.c.origin)
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=ingested_inputs.c.keys())
