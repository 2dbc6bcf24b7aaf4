"""Shared fixtures: databases (SQLite and PostgreSQL), a home folder, tiny data and models.

PostgreSQL tests use the server at ``PRICECAST_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``): one scratch database is
created per test session and dropped at its end. Where the server cannot be
reached the tests skip with the reason, unless ``PRICECAST_REQUIRE_POSTGRES=1``
(set by ``.ci/run``), in which case they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.db.engine import connect
from pipeline.db.migrate import open_database
from pipeline.db.schema import metadata
from pipeline.errors import DatabaseUnavailableError

POSTGRES_ADMIN_URL = os.environ.get(
    "PRICECAST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("PRICECAST_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a scratch PostgreSQL database for this test session."""
    try:
        admin = connect(POSTGRES_ADMIN_URL)
    except DatabaseUnavailableError as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (PRICECAST_REQUIRE_POSTGRES=1): {exc}")
        pytest.skip(f"PostgreSQL not reachable, its tests are skipped: {exc}")
    name = f"pricecast_test_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _drop_everything(engine: Engine) -> None:
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pricecast.db'}"
        return
    url = request.getfixturevalue("postgres_server_url")
    engine = connect(url)
    _drop_everything(engine)
    try:
        yield url
    finally:
        _drop_everything(engine)
        engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database with the schema created."""
    engine = open_database(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty pricecast home folder."""
    path = tmp_path / "home"
    path.mkdir()
    return path
