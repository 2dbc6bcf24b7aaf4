"""The read-only consumer role on PostgreSQL: it reads the views and tables, and writes nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from helpers import drop_everything
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from pipeline.db.lock import LockRefusedError, pipeline_lock
from pipeline.db.migrate import open_database
from pipeline.db.roles import create_reader_role
from pipeline.db.views import VIEWS
from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes


@pytest.fixture
def reader(postgres_server_url: str) -> Iterator[tuple[Engine, Engine]]:
    drop_everything(sa.create_engine(postgres_server_url))
    owner = open_database(postgres_server_url)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with owner.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO prices (ticker, trade_date, close, source) "
                "VALUES ('AAA', '2024-01-02', 10, 'p.csv')"
            )
        )
        create_reader_role(conn, role)
    url = sa.engine.make_url(postgres_server_url).set(username=role, password=None)
    engine = sa.create_engine(url)
    try:
        yield owner, engine
    finally:
        engine.dispose()
        with owner.begin() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        drop_everything(owner)
        owner.dispose()


@pytest.mark.postgres
def test_the_reader_selects_and_is_refused_every_write(reader: tuple[Engine, Engine]) -> None:
    _, engine = reader
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM prices")).scalar() == 1
        for view in VIEWS:
            conn.execute(sa.text(f"SELECT * FROM {view}")).all()
    for statement in (
        "INSERT INTO prices (ticker, trade_date, close) VALUES ('BBB', '2024-01-02', 1)",
        "UPDATE prices SET close = 0",
        "DELETE FROM forecasts",
        "DROP VIEW latest_forecasts",
        "CREATE TABLE intruder (x int)",
    ):
        with (
            pytest.raises(ProgrammingError, match="permission denied|must be owner"),
            engine.begin() as conn,
        ):
            conn.execute(sa.text(statement))


@pytest.mark.postgres
def test_the_reader_cannot_lock_create_large_objects_or_temporary_tables(
    reader: tuple[Engine, Engine],
) -> None:
    """The fault trial's reader took the advisory lock, ``lo_create``-d and created
    temporary tables (issue 15, item 5)."""
    _, engine = reader
    url = engine.url.render_as_string(hide_password=False)
    with (
        pytest.raises(LockRefusedError, match="may not take the pipeline lock.*read-only"),
        pipeline_lock(url, wait_seconds=5),
    ):
        pass
    for statement, refusal in (
        ("LOCK TABLE pipeline_lock IN EXCLUSIVE MODE", "permission denied for table"),
        ("SELECT * FROM pipeline_lock FOR UPDATE", "permission denied for table"),
        ("LOCK TABLE alembic_version IN EXCLUSIVE MODE", "permission denied for table"),
        ("SELECT lo_create(0)", "permission denied for function lo_create"),
        ("SELECT lo_creat(-1)", "permission denied for function lo_creat"),
        ("SELECT lo_from_bytea(0, 'x')", "permission denied for function lo_from_bytea"),
        ("CREATE TEMPORARY TABLE intruder (x int)", "permission denied to create temporary"),
        ("INSERT INTO pipeline_lock VALUES (1)", "permission denied for table"),
    ):
        with pytest.raises(ProgrammingError, match=refusal), engine.begin() as conn:
            conn.execute(sa.text(statement))


@pytest.mark.postgres
def test_a_reader_does_not_block_a_writers_run(
    reader: tuple[Engine, Engine], postgres_server_url: str
) -> None:
    """What the reader can still take (advisory locks, including the keys pricecast
    used before, and the reads of an open transaction) blocks neither the pipeline
    lock nor the schema's."""
    _, engine = reader
    with engine.connect() as conn:
        for key in (0x70726963, int(sha256_bytes(b"pricecast pipeline lock")[:15], 16)):
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        for table in ("pipeline_lock", "alembic_version", "prices"):
            conn.execute(sa.text(f"SELECT * FROM {table}")).all()  # transaction left open
        started = time.monotonic()
        with pipeline_lock(postgres_server_url, wait_seconds=5):
            writer = open_database(postgres_server_url)  # the schema's lock too
            with writer.begin() as write:
                write.execute(
                    sa.text(
                        "INSERT INTO prices (ticker, trade_date, close, source) "
                        "VALUES ('BBB', '2024-01-02', 11, 'p.csv')"
                    )
                )
            writer.dispose()
        assert time.monotonic() - started < 5
        assert conn.execute(sa.text("SELECT count(*) FROM prices")).scalar() == 2


@pytest.mark.postgres
def test_a_writer_that_is_no_superuser_keeps_temporary_tables(postgres_server_url: str) -> None:
    """TEMPORARY is revoked from PUBLIC and granted back to the role that made the
    reader (the bulk loads stage rows in temporary tables); large objects cannot be
    denied without a superuser, and the result says so."""
    suffix = uuid.uuid4().hex[:8]
    writer, role, database = f"writer_{suffix}", f"reader_{suffix}", f"pricecast_w_{suffix}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{writer}" LOGIN CREATEROLE'))
        conn.execute(sa.text(f'CREATE DATABASE "{database}" OWNER "{writer}"'))
    base = sa.engine.make_url(postgres_server_url).set(database=database, password=None)
    owner = open_database(base.set(username=writer).render_as_string(hide_password=False))
    try:
        with owner.begin() as conn:
            made = create_reader_role(conn, role)
        assert made.large_objects_revoked is False
        with owner.begin() as conn:
            conn.execute(sa.text("CREATE TEMPORARY TABLE staged (x int) ON COMMIT DROP"))
        reading = sa.create_engine(base.set(username=role))
        with (
            pytest.raises(ProgrammingError, match="permission denied to create temporary"),
            reading.begin() as conn,
        ):
            conn.execute(sa.text("CREATE TEMPORARY TABLE intruder (x int)"))
        reading.dispose()
    finally:
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{writer}"'))
        admin.dispose()


@pytest.mark.postgres
def test_views_recreated_later_stay_readable(reader: tuple[Engine, Engine]) -> None:
    owner, engine = reader
    with owner.begin() as conn:
        conn.execute(sa.text("UPDATE consumer_views SET sha256 = 'old'"))
        from pipeline.db.views import sync_views

        assert sync_views(conn) == list(VIEWS)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM model_leaderboard")).all()


def test_reader_roles_need_postgresql_and_a_plain_name(tmp_path) -> None:  # noqa: ANN001
    engine = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    with (
        pytest.raises(ConfigurationError, match="read-only roles are created on PostgreSQL"),
        engine.begin() as conn,
    ):
        create_reader_role(conn, "reader")


@pytest.fixture
def mariadb_reader(mariadb_server_url: str) -> Iterator[tuple[Engine, Engine, str]]:
    drop_everything(sa.create_engine(mariadb_server_url))
    owner = open_database(mariadb_server_url)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with owner.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO prices (ticker, trade_date, close, source) "
                "VALUES ('AAA', '2024-01-02', 10, 'p.csv')"
            )
        )
        made = create_reader_role(conn, role, "s3cret")
    assert made.per_table and made.large_objects_revoked
    url = sa.engine.make_url(mariadb_server_url).set(username=role, password="s3cret")
    engine = sa.create_engine(url)
    try:
        yield owner, engine, url.render_as_string(hide_password=False)
    finally:
        engine.dispose()
        with owner.begin() as conn:
            conn.execute(sa.text(f"DROP USER '{role}'@'%'"))
        drop_everything(owner)
        owner.dispose()


@pytest.mark.mariadb
def test_the_mariadb_reader_selects_and_is_refused_every_write(
    mariadb_reader: tuple[Engine, Engine, str],
) -> None:
    owner, engine, url = mariadb_reader
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM prices")).scalar() == 1
        for view in VIEWS:
            conn.execute(sa.text(f"SELECT * FROM {view}")).all()
    with (
        pytest.raises(LockRefusedError, match="may not take the pipeline lock"),
        pipeline_lock(url, wait_seconds=5),
    ):
        pass
    for statement in (
        "INSERT INTO prices (ticker, trade_date, close) VALUES ('BBB', '2024-01-02', 1)",
        "UPDATE prices SET close = 0",
        "DELETE FROM forecasts",
        "DROP VIEW latest_forecasts",
        "CREATE TABLE intruder (x int)",
        "CREATE TEMPORARY TABLE intruder (x int)",
        "LOCK TABLES pipeline_lock WRITE",
        "LOCK TABLES prices READ",
        "SELECT * FROM pipeline_lock",
    ):
        with (
            pytest.raises(sa.exc.DBAPIError, match="denied"),
            engine.begin() as conn,
        ):
            conn.execute(sa.text(statement))
    # Views dropped and recreated keep their grants.
    with owner.begin() as conn:
        conn.execute(sa.text("UPDATE consumer_views SET sha256 = 'old'"))
        from pipeline.db.views import sync_views

        assert sync_views(conn) == list(VIEWS)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM model_leaderboard")).all()


@pytest.mark.mariadb
def test_the_mariadb_reader_does_not_block_a_writers_run(
    mariadb_reader: tuple[Engine, Engine, str], mariadb_server_url: str
) -> None:
    _, engine, _ = mariadb_reader
    database = sa.engine.make_url(mariadb_server_url).database
    with engine.connect() as conn:
        old_name = f"pricecast:{sha256_bytes(database.encode())[:16]}"
        assert conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": old_name}).scalar()
        for table in ("alembic_version", "prices"):
            conn.execute(sa.text(f"SELECT * FROM {table}")).all()  # transaction left open
        started = time.monotonic()
        with pipeline_lock(mariadb_server_url, wait_seconds=5):
            writer = open_database(mariadb_server_url)
            with writer.begin() as write:
                write.execute(
                    sa.text(
                        "INSERT INTO prices (ticker, trade_date, close, source) "
                        "VALUES ('BBB', '2024-01-02', 11, 'p.csv')"
                    )
                )
            writer.dispose()
        assert time.monotonic() - started < 5
