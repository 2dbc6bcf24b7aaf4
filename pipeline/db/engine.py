"""Engines from URLs, with errors a user can act on, and schema creation.

Functions elsewhere take a ``Connection``; only this module builds engines.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from pipeline.db.limits import configured_network_timeout, configured_statement_timeout
from pipeline.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    FrozenConnectionError,
    StatementTimeoutError,
)

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
#: Seconds the client waits for an answer beyond the statement timeout, so that the
#: server's own cancellation (PostgreSQL's ``statement_timeout``, MariaDB's
#: ``max_statement_time``), which names the cause, normally arrives first.
REPLY_MARGIN = 30
#: Keepalive probes sent before a silent peer is given up.
KEEPALIVE_COUNT = 3


@dataclass(frozen=True)
class Keepalive:
    """How a connection notices a network that drops packets, from
    ``PRICECAST_NETWORK_TIMEOUT``: the first probe after ``idle`` silent seconds, then
    ``count`` probes ``interval`` seconds apart (about the timeout in all); data left
    unacknowledged for ``user_timeout_ms`` fails the connection (``TCP_USER_TIMEOUT``,
    which also caps the probing)."""

    idle: int
    interval: int
    count: int
    user_timeout_ms: int

    @classmethod
    def within(cls, seconds: float) -> Keepalive:
        return cls(
            idle=max(1, round(seconds / 2)),
            interval=max(1, round(seconds / (2 * KEEPALIVE_COUNT))),
            count=KEEPALIVE_COUNT,
            user_timeout_ms=max(1, round(seconds * 1000)),
        )


def _network_limits(
    url: URL, statement_timeout: float, network_timeout: float = 60.0
) -> dict[str, object]:
    """Driver arguments that bound how long a dead or silent server can stall a run."""
    given = set(url.query)
    backend = url.get_backend_name()
    if backend == "postgresql":
        keepalive = Keepalive.within(network_timeout)
        limits: dict[str, object] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "keepalives": 1,
            "keepalives_idle": keepalive.idle,
            "keepalives_interval": keepalive.interval,
            "keepalives_count": keepalive.count,
            "tcp_user_timeout": keepalive.user_timeout_ms,
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


def _keep_alive(sock: socket.socket, keepalive: Keepalive) -> None:
    """What libpq's ``keepalives_*`` and ``tcp_user_timeout`` do, on a TCP socket (PyMySQL
    has no such options); Linux names them, other systems keep their defaults."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", keepalive.idle),
        ("TCP_KEEPINTVL", keepalive.interval),
        ("TCP_KEEPCNT", keepalive.count),
        ("TCP_USER_TIMEOUT", keepalive.user_timeout_ms),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _limit_mysql_reads(statement_timeout: float, network_timeout: float = 60.0):  # noqa: ANN202
    """A ``connect`` listener giving a MariaDB/MySQL connection its statement limits and
    its keepalives.

    PyMySQL has one read timeout for the greeting and for every answer; it is
    ``CONNECT_TIMEOUT`` while connecting (a silent port fails in seconds) and is
    raised here, on the connected socket, through PyMySQL's ``_read_timeout`` and
    ``_write_timeout`` (no public setter; ``tests/db/test_schema.py`` checks both
    ends). MariaDB also cancels the statement itself (``max_statement_time``).
    """
    patience = statement_timeout + REPLY_MARGIN if statement_timeout else None
    keepalive = Keepalive.within(network_timeout)

    def listener(dbapi_connection, _record) -> None:  # noqa: ANN001
        if hasattr(dbapi_connection, "_read_timeout"):
            dbapi_connection._read_timeout = patience  # noqa: SLF001
            dbapi_connection._write_timeout = patience  # noqa: SLF001
        sock = getattr(dbapi_connection, "_sock", None)
        if isinstance(sock, socket.socket):
            _keep_alive(sock, keepalive)
        server = dbapi_connection.get_server_info() if statement_timeout else ""
        if "MariaDB" in server:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET SESSION max_statement_time = {float(statement_timeout)}")
            cursor.close()

    return listener


#: The attribute of a DBAPI connection holding how long the client waits for each answer
#: on it (``limit_replies``; on PostgreSQL, read by the watchdog).
_REPLY_BOUND = "_pricecast_reply_bound"
#: The attribute a driver error carries when the watchdog closed its connection.
_SILENT_FOR = "pricecast_silent_for"


def limit_replies(conn: sa.Connection, seconds: float | None) -> None:
    """Bound how long the client waits for each answer on ``conn``'s DBAPI connection (a
    server that stays silent longer is given up, its connection closed); ``None``: the
    engine's own bound (the statement timeout plus ``REPLY_MARGIN``, or none).

    The pipeline lock's connection, whose statements are all instant, is given
    ``PRICECAST_NETWORK_TIMEOUT`` (``pipeline.db.lock``). No effect on SQLite.
    """
    dbapi_connection = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        setattr(dbapi_connection, _REPLY_BOUND, seconds)
    elif hasattr(dbapi_connection, "_read_timeout"):  # PyMySQL
        dbapi_connection._read_timeout = seconds  # noqa: SLF001
        dbapi_connection._write_timeout = seconds  # noqa: SLF001


@dataclass
class _Deadline:
    due: float
    fileno: int
    fired: bool = False


class _Watchdog:
    """One daemon thread that ends PostgreSQL waits that passed their deadline.

    psycopg has no client-side timeout: the server's ``statement_timeout`` cancels a
    statement, but behind a frozen network (or a hung middlebox, whose kernel still
    acknowledges TCP keepalives) its answer never arrives and the client waits for
    ever. Each call the driver makes (a statement, a commit or rollback, a ping) is
    given a deadline; past it the watchdog shuts the connection's socket down, so
    libpq sees the connection end and psycopg raises at once.

    Arming costs a lock and a list append: the thread is woken only when a deadline is
    earlier than the one it sleeps until (waking it for every statement tripled the
    cost of a ``SELECT 1``).
    """

    def __init__(self) -> None:
        self._reset()
        # A child forked while the thread held the lock would wait on it for ever; it
        # starts afresh (its parent's connections are not its to watch).
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._deadlines: list[_Deadline] = []
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def deadline(self, fileno: int, seconds: float) -> Iterator[_Deadline]:
        armed = _Deadline(time.monotonic() + seconds, fileno)
        with self._changed:
            self._deadlines.append(armed)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name="pricecast-db-watchdog", daemon=True
                )
                self._thread.start()
            if armed.due < self._wake_at:
                self._wake_at = armed.due
                self._changed.notify()
        try:
            yield armed
        finally:
            with self._changed:
                self._deadlines.remove(armed)

    def _watch(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for armed in self._deadlines:
                    if not armed.fired and armed.due <= now:
                        armed.fired = True
                        _shut_down(armed.fileno)
                pending = [armed.due for armed in self._deadlines if not armed.fired]
                self._wake_at = min(pending, default=float("inf"))
                self._changed.wait(timeout=None if not pending else self._wake_at - now)


def _shut_down(fileno: int) -> None:
    """End the TCP connection under a driver's file descriptor (the driver still owns it
    and closes it): its next read sees the connection closed."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fileno)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()


_WATCHDOG = _Watchdog()


def _bounded(method: Callable[..., Any], default: float | None, *, cursor: bool) -> Callable:
    """``method`` of the dialect, its wait bounded by the watchdog (see ``_Watchdog``)."""

    @functools.wraps(method)
    def call(target: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        dbapi_connection = target.connection if cursor else target
        seconds = getattr(dbapi_connection, _REPLY_BOUND, default)
        if not seconds:
            return method(target, *args, **kwargs)
        with _WATCHDOG.deadline(dbapi_connection.fileno(), seconds) as armed:
            try:
                return method(target, *args, **kwargs)
            except Exception as exc:
                if armed.fired:
                    with contextlib.suppress(AttributeError, TypeError):
                        setattr(exc, _SILENT_FOR, seconds)
                raise

    return call


def _watch_postgresql(engine: Engine, default: float | None) -> None:
    """Give every wait of the engine's psycopg connections a deadline (``_Watchdog``):
    by default the statement timeout plus ``REPLY_MARGIN``, or what ``limit_replies``
    set on the connection. The engine's own dialect, not the class, is wrapped."""
    dialect = engine.dialect
    for name, on_cursor in (
        ("do_execute", True),
        ("do_executemany", True),
        ("do_execute_no_params", True),
        ("do_commit", False),
        ("do_rollback", False),
        ("do_ping", False),
    ):
        setattr(dialect, name, _bounded(getattr(dialect, name), default, cursor=on_cursor))


def _frozen_connections(shown: str):  # noqa: ANN202
    """A ``handle_error`` listener turning a connection the watchdog closed into an error
    that names the database and the wait."""

    def listener(context: sa.engine.ExceptionContext) -> None:
        seconds = getattr(context.original_exception, _SILENT_FOR, None)
        if seconds is None:
            return
        what = " ".join((context.statement or "").split()) or "a commit, rollback or ping"
        what = what if len(what) <= 80 else what[:77] + "..."
        raise FrozenConnectionError(
            f"database {shown} sent no answer within {seconds:g} s ({what}), so the "
            "connection was closed: the network to it or the server is frozen (the "
            "server cancels a statement longer than PRICECAST_STATEMENT_TIMEOUT itself, "
            "and says so); check the network and the server",
            seconds,
        ) from context.original_exception

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


def connect(
    url: str, statement_timeout: float | None = None, network_timeout: float | None = None
) -> Engine:
    """Create an engine for ``url`` and check that the database answers.

    For SQLite, the folder of the database file is created when missing.

    Args:
        url: the database URL.
        statement_timeout: seconds a statement may run on a server database (0: no
            limit); default ``PRICECAST_STATEMENT_TIMEOUT``. The client waits for an
            answer ``REPLY_MARGIN`` seconds longer, then closes the connection.
        network_timeout: seconds a server connection may stay silent (keepalives, TCP
            user timeout); default ``PRICECAST_NETWORK_TIMEOUT``.

    Raises:
        ConfigurationError: the URL is invalid or names a driver that is not installed.
        DatabaseUnavailableError: the database cannot be reached.
    """
    parsed = parse_url(url)
    shown = describe_url(parsed)
    path = sqlite_path(parsed)
    limit = configured_statement_timeout() if statement_timeout is None else statement_timeout
    silence = configured_network_timeout() if network_timeout is None else network_timeout
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailableError(
                f"cannot create the folder of SQLite database {path}: {exc.strerror}"
            ) from exc
    try:
        engine = sa.create_engine(
            parsed, pool_pre_ping=True, connect_args=_network_limits(parsed, limit, silence)
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
        event.listen(engine, "connect", _limit_mysql_reads(limit, silence))
    elif engine.dialect.name == "postgresql":
        _watch_postgresql(engine, limit + REPLY_MARGIN if limit else None)
        event.listen(engine, "handle_error", _frozen_connections(shown))
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
