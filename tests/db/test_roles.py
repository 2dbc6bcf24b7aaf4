"""The read-only consumer role on PostgreSQL: it reads the views and tables, and writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from helpers import drop_everything
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from pipeline.db.migrate import open_database
from pipeline.db.roles import create_reader_role
from pipeline.db.views import VIEWS
from pipeline.errors import ConfigurationError


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
