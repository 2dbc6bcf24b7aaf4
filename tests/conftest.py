"""Shared fixtures: databases (SQLite, PostgreSQL, MariaDB) and a home folder.

PostgreSQL tests use the server at ``PRICECAST_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and MariaDB tests the one
at ``PRICECAST_TEST_MYSQL_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/test``):
one scratch database per server is created per test session and dropped at its
end. Where a server cannot be reached its tests skip with the reason, unless
``PRICECAST_REQUIRE_POSTGRES=1`` / ``PRICECAST_REQUIRE_MARIADB=1`` (set by
``.ci/run``), in which case they fail.

``db_url`` and ``engine`` run a test on SQLite and PostgreSQL; ``portable_db_url``
and ``portable_engine`` add MariaDB, for the SQL that promises to be portable
(upserts, consumer views).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import drop_everything
from sqlalchemy.engine import Engine

from pipeline.db.engine import connect
from pipeline.db.migrate import open_database
from pipeline.errors import DatabaseUnavailableError
from pipeline.sequences import handoff

# Tests train tiny networks in their own process: a worker process would spend
# about 5 s starting TensorFlow for each of them. The tests of the workers
# themselves (tests/model/test_memory.py, tests/test_orphans.py) ask for them.
os.environ.setdefault("PRICECAST_TRAIN_WORKERS", "0")

#: Modules whose tests take the longest (each 30 to 60 s on two cores: full-size or
#: subprocess runs), collected first so that pytest-xdist starts them early instead of
#: leaving one of them to run alone at the end of the suite.
SLOW_FIRST = (
    "tests/model/test_memory.py",
    "tests/test_end_to_end.py",
    "tests/test_wheel.py",
    "tests/flows/test_backfill.py",
    "tests/model/test_groups.py",
    "tests/deployments/test_deployments_e2e.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every process collects the same order (xdist requires it): the ``SLOW_FIRST``
    modules, then the rest, each module's tests in their own order."""
    rank = {module: index for index, module in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(SLOW_FIRST)))


POSTGRES_ADMIN_URL = os.environ.get(
    "PRICECAST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_ADMIN_URL = os.environ.get(
    "PRICECAST_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


def _scratch_database(
    admin_url: str, kind: str, required_by: str, create: str, drop: str
) -> Iterator[str]:
    try:
        admin = connect(admin_url)
    except DatabaseUnavailableError as exc:
        if os.environ.get(required_by) == "1":
            pytest.fail(f"{kind} is required ({required_by}=1): {exc}")
        pytest.skip(f"{kind} not reachable, its tests are skipped: {exc}")
    name = f"pricecast_test_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(create.format(name=name)))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(drop.format(name=name)))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a scratch PostgreSQL database for this test session."""
    yield from _scratch_database(
        POSTGRES_ADMIN_URL,
        "PostgreSQL",
        "PRICECAST_REQUIRE_POSTGRES",
        'CREATE DATABASE "{name}"',
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    )


@pytest.fixture(scope="session")
def mariadb_server_url() -> Iterator[str]:
    """URL of a scratch MariaDB/MySQL database for this test session."""
    yield from _scratch_database(
        MYSQL_ADMIN_URL,
        "MariaDB/MySQL",
        "PRICECAST_REQUIRE_MARIADB",
        "CREATE DATABASE `{name}`",
        "DROP DATABASE IF EXISTS `{name}`",
    )


def _empty_database(kind: str, tmp_path: Path, server: Callable[[str], str]) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'pricecast.db'}"
        return
    url = server(f"{kind}_server_url")
    engine = connect(url)
    drop_everything(engine)
    try:
        yield url
    finally:
        drop_everything(engine)
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, on SQLite and on PostgreSQL."""
    yield from _empty_database(request.param, tmp_path, request.getfixturevalue)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def portable_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, on SQLite, PostgreSQL and MariaDB."""
    yield from _empty_database(request.param, tmp_path, request.getfixturevalue)


def _engine(url: str) -> Iterator[Engine]:
    engine = open_database(url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database (SQLite, PostgreSQL) with the schema created."""
    yield from _engine(db_url)


@pytest.fixture
def portable_engine(portable_db_url: str) -> Iterator[Engine]:
    """An engine on an empty database (SQLite, PostgreSQL, MariaDB) with the schema created."""
    yield from _engine(portable_db_url)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty pricecast home folder."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """The API of one Prefect test harness per test process (a temporary server and
    database: about 10 s of CPU to start, and its database migrated): the flow tests
    (``tests/flows/conftest.py``) run in it, and the command-line tests
    (``tests/test_cli.py``) point their commands at its server instead of starting
    another. Prefect is imported only by the tests that ask for it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # 148 s were seen on two cores shared with other work; a timeout fails every test
    # of the process that asked for the harness.
    with prefect_test_harness(server_startup_timeout=300):
        yield PREFECT_API_URL.value()


@pytest.fixture(autouse=True)
def _nothing_handed_over() -> Iterator[None]:
    """The windows a build keeps for the train stage (``pipeline.sequences.handoff``,
    process-wide) do not outlive the test that built them."""
    yield
    handoff.clear()
