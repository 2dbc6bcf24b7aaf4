"""One pipeline run at a time per database, across processes and machines.

Every run of the pipeline (the daily flow, a backfill, a stage from the
command line) holds the lock of its database while it writes:

* PostgreSQL: ``LOCK TABLE pipeline_lock IN EXCLUSIVE MODE`` in a transaction
  kept open on its own connection for the run. The mode needs UPDATE, DELETE or
  TRUNCATE on the table, which the read-only role (``pipeline.db.roles``) lacks,
  so it cannot take the lock (any role could take the advisory lock used
  before and block every writer); the only mode it can take on the table,
  ACCESS SHARE (a SELECT), does not conflict with it. A table lock assigns no
  transaction id, so the open transaction holds back no vacuum horizon (a row
  lock, ``SELECT ... FOR UPDATE``, would, for the whole run).
* MariaDB/MySQL: ``LOCK TABLES pipeline_lock WRITE`` on its own connection,
  which needs the LOCK TABLES privilege (``GET_LOCK``, used before, is open to
  every user of the server; ``SELECT ... FOR UPDATE`` needs only SELECT there).
* SQLite: an exclusive ``flock`` on ``<database file>.lock`` beside the file,
  its path resolved (a relative path or a symbolic link is the same file).

The table belongs to the database (and schema) itself, so ``localhost`` and
``127.0.0.1``, a default port or user left out, all name the same lock. A
database without it (new, or older than revision ``0010_pipeline_lock``) has
its schema created or upgraded first (``ensure_schema`` serialises itself).

If the lock's connection is lost during the run, the server has released the
lock and another run may start. ``assert_lock_held`` (or the ``assert_held``
of what ``pipeline_lock`` yields) pings the lock's connection (PostgreSQL: is
the table lock still granted to its session) and raises ``LockLostError``
once it is gone; the daily run's policy (``pipeline.run.daily_run``) calls it
before each stage and before recording the run, so such a run stops at the
next stage boundary with that as its error. A check costs one round trip; a
run that does not hold the lock (a test calling the policy directly) is not
checked. The release at the end also logs a loss (the run's own outcome, error
or not, is what the caller sees) rather than fail with an error of its own.

A second run waits for the first (up to ``wait_seconds``, then a clear
error). The lock is re-entrant within one run: a backfill holds it and the
daily runs it calls as subflows pass straight through (the held locks live in
a context variable, which Prefect carries into the threads it runs flows in).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import sqlalchemy as sa

from pipeline.db.engine import (
    Keepalive,
    connect,
    describe_url,
    limit_replies,
    parse_url,
    sqlite_path,
)
from pipeline.db.limits import configured_network_timeout
from pipeline.errors import DatabaseUnavailableError, FrozenConnectionError, PricecastError
from pipeline.files import sha256_bytes

logger = logging.getLogger(__name__)

#: How long a run waits for another run's lock by default.
DEFAULT_WAIT_SECONDS = 6 * 3600
_POLL_SECONDS = 0.5


class LockTimeoutError(PricecastError):
    """Another run held the database's lock for longer than this run would wait."""


class LockRefusedError(PricecastError):
    """The role connecting may not take the lock: it is the read-only role."""


class LockLostError(PricecastError):
    """The connection holding the lock was lost during the run: the server released it."""


class HeldLock:
    """The pipeline lock a run holds: ``assert_held`` checks that it still does."""

    def __init__(self, database_url: str, conn: sa.Connection | None = None) -> None:
        self.database = describe_url(database_url)
        self._conn = conn
        self._guard = threading.Lock()
        #: Why the lock was lost (the driver's message), once a check found it gone.
        self.lost: str | None = None

    def assert_held(self, before: str = "") -> None:
        """Ping the lock's connection; raise if the lock is gone.

        Raises:
            LockLostError: the connection was lost (or reset), so the server released
                the lock and another run may have started.
        """
        if self._conn is not None and self.lost is None:
            with self._guard:
                try:
                    if not _held_now(self._conn):
                        self.lost = "its session no longer holds the lock"
                except FrozenConnectionError as exc:
                    self.lost = (
                        f"it sent no answer within {exc.seconds:g} s "
                        "(PRICECAST_NETWORK_TIMEOUT), so it was closed: the network or the "
                        "server is frozen"
                    )
                except sa.exc.SQLAlchemyError as exc:
                    orig = getattr(exc, "orig", None) or exc
                    self.lost = " ".join(str(orig).split())[:200] or type(orig).__name__
        if self.lost is not None:
            where = f"; the run stopped before {before}, writing nothing more" if before else ""
            raise LockLostError(
                f"the connection holding the pipeline lock on {self.database} was lost "
                f"({self.lost}): the server releases the lock with its connection, so "
                f"another run may have started meanwhile{where}"
            )


_HELD: ContextVar[dict[str, HeldLock]] = ContextVar("pricecast_held_locks", default={})  # noqa: B039


def assert_lock_held(database_url: str, before: str = "") -> None:
    """Check the lock this run holds on the database, if it holds one (``HeldLock.assert_held``).

    Raises:
        LockLostError: the lock's connection was lost since the lock was taken.
    """
    held = _HELD.get().get(lock_key(database_url))
    if held is not None:
        held.assert_held(before)


def lock_key(database_url: str) -> str:
    """A hash of the URL without the password: which locks this run already holds
    (re-entrance). The lock itself belongs to the database, whatever its URL's spelling."""
    return sha256_bytes(describe_url(database_url).encode())[:16]


@contextlib.contextmanager
def pipeline_lock(
    database_url: str, wait_seconds: float = DEFAULT_WAIT_SECONDS
) -> Iterator[HeldLock]:
    """Hold the database's pipeline lock for the block (see the module docstring); the
    block gets the ``HeldLock`` (the outer one when re-entered).

    Raises:
        LockTimeoutError: another run held it for more than ``wait_seconds``.
    """
    key = lock_key(database_url)
    outer = _HELD.get().get(key)
    if outer is not None:
        yield outer
        return
    started = time.monotonic()
    with _acquire(database_url, wait_seconds) as held:
        waited = time.monotonic() - started
        if waited > 1:
            logger.info("waited %.0f s for another run to release the database", waited)
        token = _HELD.set({**_HELD.get(), key: held})
        try:
            yield held
        finally:
            _HELD.reset(token)


def _timeout(database_url: str, wait_seconds: float) -> LockTimeoutError:
    return LockTimeoutError(
        f"another pricecast run has held the lock on {describe_url(database_url)} for more "
        f"than {wait_seconds:.0f} s; wait for it to finish, or stop it"
    )


#: The table whose lock is the pipeline lock (``pipeline.db.schema.pipeline_lock``).
LOCK_TABLE = "pipeline_lock"
#: MariaDB/MySQL close a connection idle this long (their ``wait_timeout``, 8 hours by
#: default, would end a long run's lock); a year, their largest value.
_MYSQL_IDLE_SECONDS = 31536000


@contextlib.contextmanager
def _acquire(database_url: str, wait_seconds: float) -> Iterator[HeldLock]:
    url = parse_url(database_url)
    path = sqlite_path(url)
    if url.get_backend_name() == "sqlite":  # a file lock is never lost
        if path is None:  # in-memory: nothing else can see it
            yield HeldLock(database_url)
            return
        path = path.resolve()
        with _file_lock(path.with_name(path.name + ".lock"), database_url, wait_seconds):
            yield HeldLock(database_url)
        return
    # ``connect`` turns an unreachable server or a missing driver into the same
    # one-line errors as the rest of the pipeline gives. No statement timeout: the
    # lock's connection stays idle in its transaction for the whole run.
    engine = connect(database_url, statement_timeout=0)
    try:
        with engine.connect() as conn:
            try:
                present = sa.inspect(conn).has_table(LOCK_TABLE)
            except sa.exc.DBAPIError as exc:  # MariaDB: a user who may not see it
                raise _refused(exc, database_url) from exc
            conn.rollback()
            if not present:
                from pipeline.db.migrate import ensure_schema

                ensure_schema(engine)
            postgres = conn.dialect.name == "postgresql"
            # Every statement on this connection is instant (NOWAIT; MariaDB waits a
            # second): one unanswered for PRICECAST_NETWORK_TIMEOUT means the network or
            # the server froze, and the check fails instead of hanging the run.
            network_timeout = configured_network_timeout()
            limit_replies(conn, network_timeout)
            keepalive = Keepalive.within(network_timeout)
            for setting in (
                [
                    "SET idle_in_transaction_session_timeout = 0",
                    # The server's end too: a client gone behind a broken network is
                    # noticed within about the same time, and the lock released.
                    f"SET tcp_keepalives_idle = {keepalive.idle}",
                    f"SET tcp_keepalives_interval = {keepalive.interval}",
                    f"SET tcp_keepalives_count = {keepalive.count}",
                    f"SET tcp_user_timeout = {keepalive.user_timeout_ms}",
                ]
                if postgres
                else [
                    f"SET SESSION wait_timeout = {_MYSQL_IDLE_SECONDS}",
                    "SET SESSION lock_wait_timeout = 1",
                ]
            ):
                conn.execute(sa.text(setting))
            conn.commit()
            take = sa.text(
                f"LOCK TABLE {LOCK_TABLE} IN EXCLUSIVE MODE NOWAIT"
                if postgres
                else f"LOCK TABLES {LOCK_TABLE} WRITE"
            )
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    conn.execute(take)
                    break
                except sa.exc.DBAPIError as exc:
                    conn.rollback()
                    if not _busy(exc):
                        raise _refused(exc, database_url) from exc
                    if time.monotonic() > deadline:
                        raise _timeout(database_url, wait_seconds) from None
                    if postgres:  # MariaDB/MySQL waited a second in ``take``
                        time.sleep(_POLL_SECONDS)
            held = HeldLock(database_url, conn)
            try:
                yield held
            finally:
                with held._guard:
                    if held.lost is None:
                        _release(conn, database_url)
    finally:
        engine.dispose()


def _error_code(exc: sa.exc.DBAPIError) -> object:
    """PostgreSQL's SQLSTATE or MariaDB/MySQL's error number."""
    orig = exc.orig
    if exc.connection_invalidated or orig is None:
        return None
    if orig.args and isinstance(orig.args[0], int):  # PyMySQL: (number, message)
        return orig.args[0]
    return getattr(orig, "sqlstate", None)


def _busy(exc: sa.exc.DBAPIError) -> bool:
    """Another session holds the table: PostgreSQL's lock_not_available, MariaDB/MySQL's
    lock wait timeout."""
    return _error_code(exc) in ("55P03", 1205)


def _refused(exc: sa.exc.DBAPIError, database_url: str) -> PricecastError:
    """The error for a lock refused other than by another run: a role without the
    privileges (insufficient_privilege; access denied), or anything else."""
    reason = " ".join(str(exc.orig).split())[:200]
    code = _error_code(exc)
    if code == "42501":
        return LockRefusedError(
            f"the role connecting to {describe_url(database_url)} may not take the pipeline "
            f"lock ({reason}): it is read-only; run the pipeline as the role that owns "
            "pricecast's tables"
        )
    if code in (1044, 1142):
        return LockRefusedError(
            f"the user connecting to {describe_url(database_url)} may not take the pipeline "
            f"lock ({reason}): a read-only user cannot; the pipeline's own user needs the "
            "LOCK TABLES privilege on the database (part of ALL PRIVILEGES)"
        )
    return DatabaseUnavailableError(
        f"cannot take the pipeline lock on {describe_url(database_url)}: {reason}"
    )


def _held_now(conn: sa.Connection) -> bool:
    """Whether the lock's session still holds it (one round trip). PostgreSQL: the
    table lock granted to the session; MariaDB/MySQL: the session answers (its table
    locks end only with it)."""
    if conn.dialect.name == "postgresql":
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
                    "AND locktype = 'relation' AND relation = CAST(:t AS regclass) "
                    "AND mode = 'ExclusiveLock' AND granted"
                ),
                {"t": LOCK_TABLE},
            ).scalar()
        )
    conn.execute(sa.text("SELECT 1")).scalar()
    return True


def _release(conn: sa.Connection, database_url: str) -> None:
    """Release the lock; a lost connection (the server released it then) is logged,
    never raised over the run's own outcome."""
    try:
        if conn.dialect.name == "postgresql":
            held = _held_now(conn)
            conn.rollback()
        else:
            conn.execute(sa.text("UNLOCK TABLES"))
            conn.rollback()
            held = True
    except (sa.exc.DBAPIError, FrozenConnectionError) as exc:
        reason = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        logger.warning(
            "the connection holding the pipeline lock on %s was lost during the run (%s); "
            "the server released the lock then, so another run may have started meanwhile",
            describe_url(database_url),
            " ".join(str(reason).split())[:200],
        )
        return
    if not held:
        logger.warning(
            "the pipeline lock on %s was no longer held at the end of the run (its "
            "connection was reset); another run may have started meanwhile",
            describe_url(database_url),
        )


@contextlib.contextmanager
def _file_lock(path: Path, database_url: str, wait_seconds: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _timeout(database_url, wait_seconds) from None
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
