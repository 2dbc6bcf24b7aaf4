"""One pipeline run at a time per database, across processes and machines.

Every run of the pipeline (the daily flow, a backfill, a stage from the
command line) holds the lock of its database while it writes:

* PostgreSQL: a session-level advisory lock, on its own connection;
* MariaDB/MySQL: ``GET_LOCK`` on its own connection;
* SQLite: an exclusive ``flock`` on ``<database file>.lock`` beside it.

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
        with _file_lock(path.with_name(path.name + ".lock"), database_url, wait_seconds):
            yield
        return
    # ``connect`` turns an unreachable server or a missing driver into the
    # same one-line errors as the rest of the pipeline gives.
    engine = connect(database_url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.dialect.name == "postgresql":
                number = int(key[:15], 16)
                take = sa.text("SELECT pg_try_advisory_lock(:k)").bindparams(k=number)
                release = sa.text("SELECT pg_advisory_unlock(:k)").bindparams(k=number)
            else:
                name = f"pricecast:{key}"
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
                conn.execute(release)
    finally:
        engine.dispose()


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
