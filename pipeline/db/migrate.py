"""Create or upgrade the schema.

A database without pricecast tables is created from ``schema.metadata`` in one
step and stamped with the newest Alembic revision; a database stamped with an
older revision is upgraded through the numbered revisions in order. Either way
the consumer views are then brought in step with ``sql/`` (``views``). Both happen
in one transaction, under a lock on PostgreSQL so that two runs starting at once
do not race: ``alembic_version`` locked in EXCLUSIVE mode, which the read-only role
cannot take (reading it does not conflict), or, in a database that has no
``alembic_version`` yet (no reader can have been granted anything there), a
transaction-level advisory lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from pipeline.db.engine import connect, describe_url, parse_url, sqlite_path
from pipeline.db.schema import metadata
from pipeline.db.views import sync_views
from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x70726963  # "pric": the advisory lock creating a new PostgreSQL schema


def alembic_config(connection: Connection) -> Config:
    """Alembic configuration running on ``connection``."""
    config = Config()
    config.set_main_option("script_location", "pipeline.db:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of pricecast."""
    config = Config()
    config.set_main_option("script_location", "pipeline.db:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is stamped with, or ``None`` when it has none."""
    return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(engine: Engine) -> str:
    """Create the schema in an empty database or upgrade an older one.

    On SQLite, foreign keys are off while revisions run (Alembic's batch mode
    rebuilds tables, which would otherwise trip over the rows that reference
    them), leftover ``_alembic_tmp_`` tables of an interrupted migration are
    removed first, and the foreign keys are checked afterwards.

    Returns:
        The revision the database is at afterwards.

    Raises:
        ConfigurationError: the database holds pricecast tables without a
            revision stamp, or a revision newer than this version knows.
    """
    head = head_revision()
    with engine.connect() as conn, _mysql_creation_lock(conn):
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                revision = _ensure_schema(conn, head)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise ConfigurationError(
                            f"the schema upgrade left {len(broken)} rows whose foreign keys "
                            f"point nowhere (first: {tuple(broken[0])}); nothing was changed"
                        )
        finally:
            if sqlite:
                _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")
    return revision


#: Seconds a MariaDB/MySQL schema creation waits for another one to finish.
_MYSQL_CREATION_WAIT = 600


@contextlib.contextmanager
def _mysql_creation_lock(conn: Connection) -> Iterator[None]:
    """On MariaDB/MySQL, creations of a new database's schema take turns.

    Their DDL commits statement by statement, so two runs starting on a new
    database would both create tables, and one would fail on a table the other
    made; the second now waits (``GET_LOCK``, named after the database) and then
    finds the schema in place. Only while ``alembic_version`` does not exist: a
    user who takes that name can delay the creation of a new database's schema,
    never a run on an existing one (the pipeline lock is ``pipeline_lock``'s).
    """
    if conn.dialect.name not in ("mysql", "mariadb") or sa.inspect(conn).has_table(
        "alembic_version"
    ):
        conn.rollback()
        yield
        return
    database = conn.execute(sa.text("SELECT DATABASE()")).scalar() or ""
    name = f"pricecast-schema:{sha256_bytes(database.encode())[:16]}"
    taken = conn.execute(
        sa.text("SELECT GET_LOCK(:n, :s)"), {"n": name, "s": _MYSQL_CREATION_WAIT}
    ).scalar()
    conn.commit()
    if not taken:
        raise ConfigurationError(
            f"another process has been creating the schema of database {database} for more "
            f"than {_MYSQL_CREATION_WAIT} s (MariaDB/MySQL lock {name}); try again once it is done"
        )
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
        conn.commit()


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    """Run a PRAGMA outside any transaction (inside one, SQLite ignores foreign_keys)."""
    conn.connection.dbapi_connection.execute(pragma)  # type: ignore[union-attr]


def _ensure_schema(conn: Connection, head: str) -> str:
    if conn.dialect.name == "postgresql":
        # Not the pipeline lock's table: the run holding that lock ensures the schema too.
        if conn.execute(sa.text("SELECT to_regclass('alembic_version')")).scalar() is None:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        else:
            conn.execute(sa.text("LOCK TABLE alembic_version IN EXCLUSIVE MODE"))
    current = current_revision(conn)
    if current == head:
        sync_views(conn)
        return head
    config = alembic_config(conn)
    if current is None:
        present = sorted(set(metadata.tables) & set(sa.inspect(conn).get_table_names()))
        if present:
            raise ConfigurationError(
                f"database already has tables {', '.join(present)} but no schema "
                "revision; it was not created by pricecast, use another database"
            )
        metadata.create_all(conn)
        command.stamp(config, "head")
        sync_views(conn)
        logger.info("created the schema at revision %s", head)
        return head
    known = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
    if current not in known:
        raise ConfigurationError(
            f"database schema is at revision {current}, newer than this pricecast "
            f"knows (head {head}); upgrade pricecast"
        )
    if conn.dialect.name == "sqlite":
        for table in sa.inspect(conn).get_table_names():
            if table.startswith("_alembic_tmp_"):
                logger.warning("removing %s, left by an interrupted schema upgrade", table)
                conn.execute(sa.text(f'DROP TABLE "{table}"'))
    command.upgrade(config, "head")
    sync_views(conn)
    logger.info("upgraded the schema from revision %s to %s", current, head)
    return head


def open_database(url: str) -> Engine:
    """Connect to ``url`` and make sure its schema is current.

    Raises:
        ConfigurationError: the URL is invalid, or the schema cannot be used.
        DatabaseUnavailableError: the database cannot be reached.
    """
    engine = connect(url)
    ensure_schema(engine)
    return engine


def open_existing_database(url: str) -> Engine:
    """Connect to ``url`` for reading only: the database must already hold pricecast's
    schema at this version's revision. Nothing is created or upgraded (no SQLite
    file either), so a read-only command pointed at the wrong database changes nothing.

    Raises:
        ConfigurationError: the URL is invalid, the SQLite file does not exist, or the
            database has no pricecast schema or one at another revision.
        DatabaseUnavailableError: the database cannot be reached.
    """
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    shown = describe_url(parsed)
    if path is not None and not path.is_file():
        raise ConfigurationError(
            f"SQLite database {path} does not exist; a writing command (pricecast run, "
            "pricecast ingest) creates it"
        )
    engine = connect(url)
    with engine.connect() as conn:
        current = current_revision(conn)
    head = head_revision()
    if current is None:
        engine.dispose()
        raise ConfigurationError(
            f"database {shown} holds no pricecast schema; point --database-url or "
            "PRICECAST_DATABASE_URL at the pipeline's database (a writing command creates it)"
        )
    if current != head:
        engine.dispose()
        raise ConfigurationError(
            f"database {shown} is at schema revision {current}, not this pricecast's {head}; "
            "a writing command (pricecast run, pricecast ingest) upgrades it"
        )
    return engine
