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

from pipeline.db.limits import configured_statement_timeout
from pipeline.errors import ConfigurationError, DatabaseUnavailableError, StatementTimeoutError

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
#: 132 s); a URL's own ``connect_timeout`` wins. On MariaDB/MySQL it also bounds the
#: reads of the server's greeting and of the login (``_limit_mysql_reads``).
CONNECT_TIMEOUT = 10
#: TCP keepalive of server connections: a peer gone silent (a frozen network) is
#: noticed after about IDLE + INTERVAL * COUNT seconds instead of hanging the run
#: while it holds the pipeline lock.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3
#: Seconds PyMySQL waits for an answer beyond the statement timeout, so that the
#: server's own cancellation (MariaDB's ``max_statement_time``), which names the
#: cause, normally arrives first.
MYSQL_READ_MARGIN = 30


def _network_limits(url: URL, statement_timeout: float) -> dict[str, object]:
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
        if statement_timeout:
            # Before the URL's own options, so that a ``-c statement_timeout`` there wins.
            own = f"-c statement_timeout={round(statement_timeout * 1000)}"
            extra = url.query.get("options")
            limits["options"] = f"{own} {extra}" if isinstance(extra, str) else own
            given.discard("options")
    elif backend in ("mysql", "mariadb"):
        # PyMySQL reads the greeting and the login under its read timeout; once
        # connected, ``_limit_mysql_reads`` sets the statements' own limit.
        limits = {
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": CONNECT_TIMEOUT,
            "write_timeout": CONNECT_TIMEOUT,
        }
    else:
        return {}
    return {key: value for key, value in limits.items() if key not in given}


def _limit_mysql_reads(statement_timeout: float):  # noqa: ANN202
    """A ``connect`` listener giving a MariaDB/MySQL connection its statement limits.

    PyMySQL has one read timeout for the greeting and for every answer; it is
    ``CONNECT_TIMEOUT`` while connecting (a silent port fails in seconds) and is
    raised here, on the connected socket, through PyMySQL's ``_read_timeout`` and
    ``_write_timeout`` (no public setter; ``tests/db/test_schema.py`` checks both
    ends). MariaDB also cancels the statement itself (``max_statement_time``).
    """
    patience = statement_timeout + MYSQL_READ_MARGIN if statement_timeout else None

    def listener(dbapi_connection, _record) -> None:  # noqa: ANN001
        if hasattr(dbapi_connection, "_read_timeout"):
            dbapi_connection._read_timeout = patience  # noqa: SLF001
            dbapi_connection._write_timeout = patience  # noqa: SLF001
        server = dbapi_connection.get_server_info() if statement_timeout else ""
        if "MariaDB" in server:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET SESSION max_statement_time = {float(statement_timeout)}")
            cursor.close()

    return listener


def _statement_timeouts(shown: str, statement_timeout: float):  # noqa: ANN202
    """A ``handle_error`` listener turning a cancelled statement into an error that
    names the database and the setting to raise."""

    def listener(context: sa.engine.ExceptionContext) -> None:
        if context.statement is None:  # connecting: ``connect`` reports that itself
            return
        orig = context.original_exception
        sqlstate = getattr(orig, "sqlstate", None)
        code = orig.args[0] if getattr(orig, "args", None) else None  # PyMySQL's number
        text = str(orig)
        timed_out = (
            (sqlstate == "57014" and "statement timeout" in text)
            or code == 1969  # MariaDB: max_statement_time exceeded
            or (code == 2013 and "timed out" in text)  # PyMySQL's read timeout
        )
        if not timed_out:
            return
        statement = " ".join(context.statement.split())
        statement = statement if len(statement) <= 80 else statement[:77] + "..."
        raise StatementTimeoutError(
            f"a statement on database {shown} ran longer than {statement_timeout:g} s and "
            f"was cancelled ({statement}); if it is legitimately that long, raise "
            "PRICECAST_STATEMENT_TIMEOUT (seconds, 0: no limit)"
        ) from orig

    return listener


def connect(url: str, statement_timeout: float | None = None) -> Engine:
    """Create an engine for ``url`` and check that the database answers.

    For SQLite, the folder of the database file is created when missing.

    Args:
        url: the database URL.
        statement_timeout: seconds a statement may run on a server database (0: no
            limit); default ``PRICECAST_STATEMENT_TIMEOUT``.

    Raises:
        ConfigurationError: the URL is invalid or names a driver that is not installed.
        DatabaseUnavailableError: the database cannot be reached.
    """
    parsed = parse_url(url)
    shown = describe_url(parsed)
    path = sqlite_path(parsed)
    limit = configured_statement_timeout() if statement_timeout is None else statement_timeout
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailableError(
                f"cannot create the folder of SQLite database {path}: {exc.strerror}"
            ) from exc
    try:
        engine = sa.create_engine(
            parsed, pool_pre_ping=True, connect_args=_network_limits(parsed, limit)
        )
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
    elif engine.dialect.name in ("mysql", "mariadb"):
        event.listen(engine, "connect", _limit_mysql_reads(limit))
    if limit and engine.dialect.name != "sqlite":
        event.listen(engine, "handle_error", _statement_timeouts(shown, limit))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (OperationalError, SAInterfaceError) as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailableError(f"cannot connect to database {shown}: {reason}") from exc
    logger.debug("connected to %s", shown)
    return engine
