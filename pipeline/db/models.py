"""The model registry: the ``models`` and ``model_tickers`` tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.db.schema import model_tickers, models
from pipeline.files import sha256_json


def next_version(conn: Connection) -> int:
    """The version number the next registered model gets."""
    return (conn.execute(sa.select(sa.func.max(models.c.version))).scalar_one() or 0) + 1


def get_model(conn: Connection, version: int) -> dict[str, Any] | None:
    """The registry row of ``version``, or ``None``."""
    row = conn.execute(sa.select(models).where(models.c.version == version)).mappings().first()
    return dict(row) if row else None


def find_model_by_fingerprint(conn: Connection, fingerprint: str) -> dict[str, Any] | None:
    """The model trained from exactly these inputs, if one was registered."""
    query = sa.select(models).where(models.c.fingerprint == fingerprint)
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def champion_model(conn: Connection, as_of: dt.date) -> dict[str, Any] | None:
    """The champion as of ``as_of``: of the promoted models trained on data no later
    than ``as_of``, the one with the newest ``data_through`` (ties: the newest
    version), or ``None``.

    A run as of a past date never uses a model that saw later prices, and the
    model such a run registers (trained on less data) never becomes the champion
    of a later date whose own champion saw more.
    """
    query = (
        sa.select(models)
        .where(models.c.data_through <= as_of, models.c.promoted.is_(True))
        .order_by(models.c.data_through.desc(), models.c.version.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def models_with_files(conn: Connection) -> list[dict[str, Any]]:
    """The registered versions whose files retention has not deleted, newest first."""
    query = (
        sa.select(models)
        .where(models.c.files_deleted_at.is_(None))
        .order_by(models.c.version.desc())
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def retire_damaged_fingerprint(conn: Connection, version: int) -> None:
    """Give ``version`` a fingerprint no training has, because its files are damaged:
    a training from the same inputs then registers a new version with healthy files
    instead of reusing this one (as ``retention`` does for versions it collected)."""
    row = get_model(conn, version)
    if row is None:
        return
    retired = sha256_json({"damaged": version, "fingerprint": row["fingerprint"]})
    conn.execute(sa.update(models).where(models.c.version == version).values(fingerprint=retired))


def lineage(conn: Connection, version: int) -> list[dict[str, Any]]:
    """``version`` and its ancestors through ``parent_version``, newest first."""
    chain: list[dict[str, Any]] = []
    next_up: int | None = version
    while next_up is not None:
        row = get_model(conn, next_up)
        if row is None:
            break
        chain.append(row)
        next_up = row["parent_version"]
    return chain


def register_model(
    conn: Connection, model: Mapping[str, Any], tickers: Sequence[Mapping[str, Any]]
) -> None:
    """Insert a model version and the scaler it uses per ticker."""
    conn.execute(sa.insert(models), [dict(model)])
    conn.execute(
        sa.insert(model_tickers),
        [{c.MODEL_VERSION: model["version"], **row} for row in tickers],
    )


def model_scalers(conn: Connection, version: int) -> dict[str, dict[str, Any]]:
    """Per ticker, the scaling and fitted parameters model ``version`` was trained with."""
    query = sa.select(model_tickers).where(model_tickers.c[c.MODEL_VERSION] == version)
    return {row[c.TICKER]: dict(row) for row in conn.execute(query).mappings()}


def count_models(conn: Connection) -> int:
    """Registered model versions."""
    return conn.execute(sa.select(sa.func.count()).select_from(models)).scalar_one()
