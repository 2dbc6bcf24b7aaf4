"""The pipeline lock: one run at a time per database, re-entrant within a run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from helpers import terminate_lock_backend

from pipeline.db.lock import LockTimeoutError, pipeline_lock


def _hold(url: str, seconds: float, events: list, name: str, started: threading.Event) -> None:
    with pipeline_lock(url, wait_seconds=30):
        events.append((name, "in", time.monotonic()))
        started.set()
        time.sleep(seconds)
        events.append((name, "out", time.monotonic()))


def _serialised(url: str) -> None:
    events: list = []
    first_in = threading.Event()
    first = threading.Thread(target=_hold, args=(url, 1.0, events, "first", first_in))
    first.start()
    assert first_in.wait(30)
    second_in = threading.Event()
    second = threading.Thread(target=_hold, args=(url, 0.0, events, "second", second_in))
    second.start()
    first.join(30)
    second.join(30)
    assert [(name, kind) for name, kind, _ in events] == [
        ("first", "in"),
        ("first", "out"),
        ("second", "in"),
        ("second", "out"),
    ]
    assert events[2][2] >= events[1][2]


def test_a_second_run_waits_for_the_first(db_url: str) -> None:
    _serialised(db_url)


def test_the_lock_is_reentrant_within_a_run_and_times_out_for_others(
    db_url: str, tmp_path: Path
) -> None:
    with pipeline_lock(db_url, wait_seconds=5), pipeline_lock(db_url, wait_seconds=5):
        outcome: list = []

        def other() -> None:
            try:
                with pipeline_lock(db_url, wait_seconds=0.6):
                    outcome.append("entered")
            except LockTimeoutError as exc:
                outcome.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
    assert len(outcome) == 1
    assert outcome[0].startswith("another pricecast run has held the lock on ")
    assert "for more than 1 s" in outcome[0]
    # Released: another run gets it at once.
    with pipeline_lock(db_url, wait_seconds=1):
        pass


@pytest.mark.mariadb
def test_mariadb_runs_are_serialised_too(mariadb_server_url: str) -> None:
    _serialised(mariadb_server_url)


def _other_spelling(url: str, tmp_path: Path) -> str:
    """The same database under another spelling of its URL."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        real = Path(parsed.database)
        link = tmp_path / "link"
        link.symlink_to(real.parent, target_is_directory=True)
        return f"sqlite:///{link / real.name}"
    host = "localhost" if parsed.host == "127.0.0.1" else "127.0.0.1"
    return parsed.set(host=host).render_as_string(hide_password=False)


def _excluded(url: str, other: str) -> str:
    outcome: list = []
    with pipeline_lock(url, wait_seconds=5):

        def take() -> None:
            try:
                with pipeline_lock(other, wait_seconds=0.6):
                    outcome.append("entered")
            except LockTimeoutError as exc:
                outcome.append(str(exc))

        thread = threading.Thread(target=take)
        thread.start()
        thread.join(30)
    return outcome[0]


def test_every_spelling_of_a_database_url_names_one_lock(db_url: str, tmp_path: Path) -> None:
    """``localhost`` and ``127.0.0.1`` (or a path through a symbolic link) once named two
    locks, and two runs on one database did not exclude each other."""
    from pipeline.db.engine import connect

    connect(db_url).dispose()  # the SQLite file exists
    other = _other_spelling(db_url, tmp_path)
    assert other != db_url
    assert _excluded(db_url, other).startswith("another pricecast run has held the lock")


@pytest.mark.mariadb
def test_every_spelling_names_one_lock_on_mariadb(mariadb_server_url: str, tmp_path: Path) -> None:
    other = _other_spelling(mariadb_server_url, tmp_path)
    assert _excluded(mariadb_server_url, other).startswith("another pricecast run has held")


@pytest.mark.postgres
def test_a_lost_lock_connection_is_reported_not_raised_over_the_run(
    postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pipeline_lock(postgres_server_url, wait_seconds=5):
        terminate_lock_backend(postgres_server_url)
    assert "was lost during the run" in caplog.text
    with pipeline_lock(postgres_server_url, wait_seconds=1):  # free again
        pass


@pytest.mark.mariadb
def test_a_mariadb_user_with_select_only_neither_takes_nor_blocks_the_lock(
    mariadb_server_url: str,
) -> None:
    """``GET_LOCK``, the lock before, was open to every user of the server; ``LOCK
    TABLES ... WRITE`` needs the LOCK TABLES privilege."""
    import uuid

    import sqlalchemy as sa

    from pipeline.db.engine import connect
    from pipeline.db.lock import LockRefusedError
    from pipeline.db.migrate import open_database
    from pipeline.files import sha256_bytes

    open_database(mariadb_server_url).dispose()
    url = sa.make_url(mariadb_server_url)
    user = f"reader_{uuid.uuid4().hex[:8]}"
    admin = connect(mariadb_server_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%'"))
        conn.execute(sa.text(f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%'"))
    reader_url = url.set(username=user, password=None).render_as_string(hide_password=False)
    reader = sa.create_engine(reader_url)
    try:
        with (
            pytest.raises(LockRefusedError, match="may not take the pipeline lock"),
            pipeline_lock(reader_url, wait_seconds=5),
        ):
            pass
        for statement in (
            "CREATE TEMPORARY TABLE intruder (x int)",
            "LOCK TABLES pipeline_lock READ",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="denied"), reader.connect() as conn:
                conn.execute(sa.text(statement))
        with reader.connect() as conn:
            old_name = f"pricecast:{sha256_bytes(url.database.encode())[:16]}"
            assert conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": old_name}).scalar()
            started = time.monotonic()
            with pipeline_lock(mariadb_server_url, wait_seconds=5):
                pass
            assert time.monotonic() - started < 5
    finally:
        reader.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'%'"))
        admin.dispose()


@pytest.mark.postgres
def test_the_postgresql_lock_holds_back_no_vacuum(postgres_server_url: str) -> None:
    """A table lock assigns no transaction id (a ``SELECT ... FOR UPDATE`` would, and
    hold back the vacuum of every table for the hours of a run)."""
    import sqlalchemy as sa

    from pipeline.db.engine import connect

    admin = connect(postgres_server_url)
    with pipeline_lock(postgres_server_url, wait_seconds=5), admin.connect() as conn:
        holder = conn.execute(
            sa.text(
                "SELECT a.backend_xid, a.backend_xmin, a.state FROM pg_locks AS l "
                "JOIN pg_stat_activity AS a ON a.pid = l.pid "
                "WHERE l.relation = 'pipeline_lock'::regclass AND l.mode = 'ExclusiveLock'"
            )
        ).one()
    admin.dispose()
    assert tuple(holder) == (None, None, "idle in transaction")


def test_runs_starting_at_once_on_a_new_database_create_its_schema_once(
    portable_db_url: str,
) -> None:
    """The lock's table is part of the schema, so a new database gets its schema before
    the lock is taken; creations take turns (MariaDB's DDL commits statement by
    statement: two at once once failed on a table the other had made)."""
    start = threading.Barrier(3)
    outcome: list = []

    def run() -> None:
        start.wait()
        try:
            with pipeline_lock(portable_db_url, wait_seconds=60):
                outcome.append("ran")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert outcome == ["ran"] * 3
