"""Errors a user can act on.

Each carries a message that says what was wrong, where (file, line, ticker,
date) and, where it helps, what to do. The command line prints the message on
one line and exits non-zero; anything else is a bug.
"""

import errno
import sys


class PricecastError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigurationError(PricecastError):
    """A setting or parameter has a value the pipeline cannot use."""


class InputFileError(PricecastError):
    """An input file is missing, unreadable or not in a known layout."""


class DatabaseUnavailableError(PricecastError):
    """The database URL cannot be connected to."""


class FrozenConnectionError(DatabaseUnavailableError):
    """A server connection sent no answer within ``seconds``: the client closed it."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class StatementTimeoutError(PricecastError):
    """A statement ran longer than ``PRICECAST_STATEMENT_TIMEOUT`` and was cancelled."""


class MissingDataError(PricecastError):
    """A stage needs data that earlier stages have not produced."""


class ModelStoreError(PricecastError):
    """A registered model file is missing or cannot be loaded."""


class StaleDataError(PricecastError):
    """Tickers lack the close of the last trading day and the policy is to fail."""


class StorageError(PricecastError):
    """A file could not be written: the disk is full, over quota, read-only or denied."""


#: ``OSError`` numbers of failures that may pass if the same call is made again.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.ENETUNREACH,
        errno.EPIPE,
        errno.ETIMEDOUT,
    }
)
#: SQLSTATEs of a transaction the database aborted to let another one through
#: (serialization failure, deadlock): the same transaction again may succeed.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
#: What the drivers say when the server went away (for drivers that do not mark the
#: connection invalidated, or errors raised while connecting).
_DISCONNECTED = (
    "server closed the connection",
    "connection refused",
    "could not connect to server",
    "connection timed out",
    "terminating connection",
    "connection already closed",
    "connection is closed",
    "lost connection",
    "server has gone away",
    "can't connect to",
    "broken pipe",
    "connection reset",
)
#: What SQLite says when another connection holds the database (or one of its tables)
#: for longer than the busy timeout: the writer finishes, so the same call may pass.
_SQLITE_BUSY = ("database is locked", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass if the same call is made again, so that retrying helps.

    Transient: a lost or refused connection (``ConnectionError``, ``socket.timeout``,
    an ``OSError`` whose number is in ``TRANSIENT_ERRNOS``, a SQLAlchemy error whose
    connection was invalidated or whose driver says the server went away, a
    serialization failure or deadlock, SQLite's ``database is locked``), and an HTTP
    request that timed out, failed to connect or got a 5xx or 429 answer.
    Deterministic, never retried: the pipeline's own errors (``PricecastError``),
    programming errors (``TypeError``, ``ValueError``...) and any other ``OSError``
    (a full disk, a quota, a read-only filesystem, a missing file), which would fail
    again the same way.

    A task's own time limit is no transient error (a retry would wait as long again);
    the orchestrator tells it apart (``flows.tasks``).
    """
    if isinstance(exc, PricecastError):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):  # socket.timeout is TimeoutError
        return True
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNOS
    return (
        _is_sqlite_busy(exc) or _is_transient_database_error(exc) or _is_transient_http_error(exc)
    )


def _is_sqlite_busy(exc: BaseException) -> bool:
    """SQLite's ``database is locked``, raised by ``sqlite3`` itself or wrapped by
    SQLAlchemy: another writer held the file past the busy timeout."""
    sqlite3 = sys.modules.get("sqlite3")  # not imported: not its error
    if sqlite3 is None:
        return False
    original = getattr(exc, "orig", None) if not isinstance(exc, sqlite3.Error) else exc
    if not isinstance(original, sqlite3.OperationalError):
        return False
    code = getattr(original, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(original).lower()
    return any(words in message for words in _SQLITE_BUSY)


def _is_transient_database_error(exc: BaseException) -> bool:
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")  # not imported: not its error
    if sqlalchemy_exc is None or not isinstance(exc, sqlalchemy_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    original = exc.orig
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if state in TRANSIENT_SQLSTATES:
        return True
    if not isinstance(exc, (sqlalchemy_exc.OperationalError, sqlalchemy_exc.InterfaceError)):
        return False
    if isinstance(original, OSError):
        return is_transient(original)
    message = str(original).lower()
    return any(words in message for words in _DISCONNECTED)


def _is_transient_http_error(exc: BaseException) -> bool:
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return False
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status == 429 or status >= 500
    return False
