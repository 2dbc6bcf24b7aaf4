"""Engines from URLs, with errors a user can act on, and schema creation.

Functions elsewhere take a ``Connection``; only this module builds engines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from pipeline.errors import ConfigurationError, DatabaseUnavailableError

logger = logging.getLogger(__name__)

# Drivers this project installs, used when a URL names only the database kind.
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def parse_url(url: str) -> URL:
    """Parse a database URL, choosing the installed driver when none is named.

    Raises:
        ConfigurationError: the URL is not a valid SQLAlchemy URL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"invalid database URL {url!r}: expected e.g. sqlite:////path/to/file.db "
            "or postgresql://user@host:5432/dbname"
        ) from exc
    if parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=_DEFAULT_DRIVERS[parsed.drivername])
    return parsed


def describe_url(url: str | URL) -> str:
    """The URL as it may be shown to people: the password is masked."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    return parsed.render_as_string(hide_password=True)


def sqlite_path(url: str | URL) -> Path | None:
    """The file of an SQLite URL, or ``None`` for other engines and in-memory databases."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _configure_sqlite(dbapi_connection, _record) -> None:  # noqa: ANN001
    # Python's sqlite3 module commits before DDL on its own, which would make
    # schema migrations non-atomic; SQLAlchemy emits BEGIN itself instead
    # (``_begin_sqlite``), so every transaction, DDL included, is all or nothing.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_sqlite(conn) -> None:  # noqa: ANN001
    conn.exec_driver_sql("BEGIN")


#: Seconds a connection attempt may take before it fails (a silent port once took
#: 132 s); a URL's own ``connect_timeout`` wins. (PyMySQL waits for the server's
#: greeting under its read timeout, which stays unset: a long upsert must not time out.)
CONNECT_TIMEOUT = 10
#: TCP keepalive of server connections: a peer gone silent (a frozen network) is
#: noticed after about IDLE + INTERVAL * COUNT seconds instead of hanging the run
#: while it holds the pipeline lock.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3


def _network_limits(url: URL) -> dict[str, object]:
    """Driver arguments that bound how long a dead or silent server can stall a run."""
    given = set(url.query)
    backend = url.get_backend_name()
    if backend == "postgresql":
        limits: dict[str, object] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE,
            "keepalives_interval": KEEPALIVE_INTERVAL,
            "keepalives_count": KEEPALIVE_COUNT,
        }
    elif backend in ("mysql", "mariadb"):
        limits = {"connect_timeout": CONNECT_TIMEOUT}
    else:
        return {}
    return {key: value for key, value in limits.items() if key not in given}


def connect(url: str) -> Engine:
    """Create an engine for ``url`` and check that the database answers.

    For SQLite, the folder of the database file is created when missing.

    Raises:
        ConfigurationError: the URL is invalid or names a driver that is not installed.
        DatabaseUnavailableError: the database cannot be reached.
    """
    parsed = parse_url(url)
    shown = describe_url(parsed)
    path = sqlite_path(parsed)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailableError(
                f"cannot create the folder of SQLite database {path}: {exc.strerror}"
            ) from exc
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=_network_limits(parsed))
    except NoSuchModuleError as exc:
        raise ConfigurationError(
            f"no SQLAlchemy driver for {parsed.drivername!r} in database URL {shown}"
        ) from exc
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"the driver for database URL {shown} is not installed ({exc.name}); "
            "install it, e.g. pip install 'pricecast[mysql]'"
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (OperationalError, SAInterfaceError) as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailableError(f"cannot connect to database {shown}: {reason}") from exc
    logger.debug("connected to %s", shown)
    return engine
