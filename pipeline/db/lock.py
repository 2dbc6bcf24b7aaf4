"""One pipeline run at a time per database, across processes and machines.

Every run of the pipeline (the daily flow, a backfill, a stage from the
command line) holds the lock of its database while it writes:

* PostgreSQL: a session-level advisory lock, on its own connection, keyed by
  the database the server says it is connected to (advisory locks are per
  database), so ``localhost`` and ``127.0.0.1``, a default port or user left
  out, all name the same lock;
* MariaDB/MySQL: ``GET_LOCK`` on its own connection, named after the server's
  ``DATABASE()`` (its locks are server-wide);
* SQLite: an exclusive ``flock`` on ``<database file>.lock`` beside the file,
  its path resolved (a relative path or a symbolic link is the same file).

If the lock's connection is lost during the run, the server has released the
lock; the release at the end then logs that (the run's own outcome, error or
not, is what the caller sees) rather than fail with an error of its own.

A second run waits for the first (up to ``wait_seconds``, then a clear
error). The lock is re-entrant within one run: a backfill holds it and the
daily runs it calls as subflows pass straight through (the held locks live in
a context variable, which Prefect carries into the threads it runs flows in).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import sqlalchemy as sa

from pipeline.db.engine import connect, describe_url, parse_url, sqlite_path
from pipeline.errors import PricecastError
from pipeline.files import sha256_bytes

logger = logging.getLogger(__name__)

#: How long a run waits for another run's lock by default.
DEFAULT_WAIT_SECONDS = 6 * 3600
_POLL_SECONDS = 0.5
_HELD: ContextVar[frozenset[str]] = ContextVar("pricecast_held_locks", default=frozenset())


class LockTimeoutError(PricecastError):
    """Another run held the database's lock for longer than this run would wait."""


def lock_key(database_url: str) -> str:
    """The name of a database's lock: a hash of its URL without the password."""
    return sha256_bytes(describe_url(database_url).encode())[:16]


@contextlib.contextmanager
def pipeline_lock(database_url: str, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Iterator[None]:
    """Hold the database's pipeline lock for the block (see the module docstring).

    Raises:
        LockTimeoutError: another run held it for more than ``wait_seconds``.
    """
    key = lock_key(database_url)
    if key in _HELD.get():
        yield
        return
    started = time.monotonic()
    with _acquire(database_url, key, wait_seconds):
        waited = time.monotonic() - started
        if waited > 1:
            logger.info("waited %.0f s for another run to release the database", waited)
        token = _HELD.set(_HELD.get() | {key})
        try:
            yield
        finally:
            _HELD.reset(token)


def _timeout(database_url: str, wait_seconds: float) -> LockTimeoutError:
    return LockTimeoutError(
        f"another pricecast run has held the lock on {describe_url(database_url)} for more "
        f"than {wait_seconds:.0f} s; wait for it to finish, or stop it"
    )


@contextlib.contextmanager
def _acquire(database_url: str, key: str, wait_seconds: float) -> Iterator[None]:
    url = parse_url(database_url)
    path = sqlite_path(url)
    if url.get_backend_name() == "sqlite":
        if path is None:  # in-memory: nothing else can see it
            yield
            return
        path = path.resolve()
        with _file_lock(path.with_name(path.name + ".lock"), database_url, wait_seconds):
            yield
        return
    # ``connect`` turns an unreachable server or a missing driver into the
    # same one-line errors as the rest of the pipeline gives.
    engine = connect(database_url, statement_timeout=0)  # idle for the run
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.dialect.name == "postgresql":
                # Advisory locks belong to the database: one constant key within it.
                number = int(sha256_bytes(b"pricecast pipeline lock")[:15], 16)
                take = sa.text("SELECT pg_try_advisory_lock(:k)").bindparams(k=number)
                release = sa.text("SELECT pg_advisory_unlock(:k)").bindparams(k=number)
            else:
                database = conn.execute(sa.text("SELECT DATABASE()")).scalar() or ""
                name = f"pricecast:{sha256_bytes(database.encode())[:16]}"
                take = sa.text("SELECT GET_LOCK(:n, 0)").bindparams(n=name)
                release = sa.text("SELECT RELEASE_LOCK(:n)").bindparams(n=name)
            deadline = time.monotonic() + wait_seconds
            while not conn.execute(take).scalar():
                if time.monotonic() > deadline:
                    raise _timeout(database_url, wait_seconds)
                time.sleep(_POLL_SECONDS)
            try:
                yield
            finally:
                _release(conn, release, database_url)
    finally:
        engine.dispose()


def _release(conn: sa.Connection, release: sa.TextClause, database_url: str) -> None:
    """Release the server lock; a lost connection (the server released it then) is
    logged, never raised over the run's own outcome."""
    try:
        released = conn.execute(release).scalar()
    except sa.exc.DBAPIError as exc:
        logger.warning(
            "the connection holding the pipeline lock on %s was lost during the run (%s); "
            "the server released the lock then, so another run may have started meanwhile",
            describe_url(database_url),
            " ".join(str(exc.orig).split())[:200],
        )
        return
    if not released:
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
