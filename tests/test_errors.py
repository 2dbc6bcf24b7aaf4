"""Which failures are worth a retry (``pipeline.errors.is_transient``), and what a failed
write says: no Prefect here, the flows' retry condition only calls this."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from pipeline.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    ModelStoreError,
    StorageError,
    is_transient,
)
from pipeline.files import write_atomically, write_text


class _Driver(Exception):
    """A DBAPI exception, as a driver raises it."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _database_error(
    kind: type[sa_exc.DBAPIError], message: str, invalidated: bool = False, **given: str
) -> sa_exc.DBAPIError:
    return kind("SELECT 1", {}, _Driver(message, **given), connection_invalidated=invalidated)


def _http_status(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://feed.example/AAA.csv")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


TRANSIENT = {
    "connection reset": ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    "connection refused": ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    "broken pipe": BrokenPipeError(errno.EPIPE, "Broken pipe"),
    "socket.timeout": TimeoutError("timed out"),
    "OSError ETIMEDOUT": OSError(errno.ETIMEDOUT, "Connection timed out"),
    "OSError ENETUNREACH": OSError(errno.ENETUNREACH, "Network is unreachable"),
    "invalidated connection": _database_error(
        sa_exc.OperationalError, "SSL SYSCALL error: EOF detected", invalidated=True
    ),
    "server closed": _database_error(
        sa_exc.OperationalError, "server closed the connection unexpectedly"
    ),
    "MySQL gone away": _database_error(sa_exc.OperationalError, "MySQL server has gone away"),
    "interface closed": _database_error(sa_exc.InterfaceError, "connection already closed"),
    "serialization failure": _database_error(
        sa_exc.OperationalError, "could not serialize access", sqlstate="40001"
    ),
    "deadlock": _database_error(sa_exc.OperationalError, "deadlock detected", sqlstate="40P01"),
    "HTTP timeout": httpx.ReadTimeout("timed out"),
    "HTTP connect": httpx.ConnectError("[Errno 111] Connection refused"),
    "HTTP cut short": httpx.RemoteProtocolError("peer closed connection"),
    "HTTP 503": _http_status(503),
    "HTTP 429": _http_status(429),
}

DETERMINISTIC = {
    "TypeError": TypeError("unsupported operand type(s)"),
    "ValueError": ValueError("could not convert string to float"),
    "KeyError": KeyError("close"),
    "ENOSPC": OSError(errno.ENOSPC, "No space left on device"),
    "EDQUOT": OSError(errno.EDQUOT, "Disk quota exceeded"),
    "EROFS": OSError(errno.EROFS, "Read-only file system"),
    "EACCES": PermissionError(errno.EACCES, "Permission denied"),
    "ENOENT": FileNotFoundError(errno.ENOENT, "No such file or directory"),
    "PricecastError": ModelStoreError("model file m.keras is missing"),
    "DatabaseUnavailableError": DatabaseUnavailableError("cannot connect to x"),
    "ConfigurationError": ConfigurationError("bad setting"),
    "integrity error": _database_error(sa_exc.IntegrityError, "duplicate key value"),
    "syntax error": _database_error(sa_exc.ProgrammingError, "syntax error at or near"),
    "bad password": _database_error(
        sa_exc.OperationalError, 'FATAL: password authentication failed for user "x"'
    ),
    "statement timeout": _database_error(
        sa_exc.OperationalError, "canceling statement due to statement timeout"
    ),
    "HTTP 404": _http_status(404),
    "HTTP error": httpx.UnsupportedProtocol("Request URL is missing a protocol"),
}


@pytest.mark.parametrize("exc", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_connection_losses_and_timeouts_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", DETERMINISTIC.values(), ids=DETERMINISTIC.keys())
def test_deterministic_failures_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_real_lost_sqlite_file_is_not_transient(tmp_path: Path) -> None:
    """An error a real driver raises, not one built by hand: a missing folder fails the
    same way every time."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(sa_exc.OperationalError) as raised:
        engine.connect()
    assert not is_transient(raised.value)


@pytest.mark.parametrize(
    ("number", "advice"),
    [
        (errno.ENOSPC, "the disk is full; free space on the filesystem of"),
        (errno.EDQUOT, "the disk quota is exhausted"),
        (errno.EROFS, "is read-only"),
    ],
)
def test_a_write_that_fails_for_good_names_the_path_and_stage(
    tmp_path: Path, number: int, advice: str
) -> None:
    target = tmp_path / "sequences" / "AAA.parquet"

    def full(_temporary: Path) -> None:
        raise OSError(number, "simulated")

    with pytest.raises(StorageError) as raised:
        write_atomically(target, full, "sequences")
    message = str(raised.value)
    assert message.startswith(f"cannot write {target} (sequences stage): simulated [")
    assert advice in message and str(target.parent) in message
    assert not is_transient(raised.value)
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_a_transient_write_error_is_raised_as_it_is(tmp_path: Path) -> None:
    def cut(_temporary: Path) -> None:
        raise OSError(errno.ETIMEDOUT, "Connection timed out")  # a network filesystem

    with pytest.raises(OSError, match="timed out") as raised:
        write_atomically(tmp_path / "r.html", cut, "report")
    assert not isinstance(raised.value, StorageError)


def test_each_writer_names_its_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file the pipeline writes goes through ``write_atomically``: the sequence
    Parquet, the model (``store.save_network``), the report, the backtest's points."""
    from pipeline.evaluate.scores import BacktestResult
    from pipeline.sequences.files import write_sequence_file

    def disk_full(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    monkeypatch.setattr(Path, "write_text", disk_full)
    table = pd.DataFrame({"a": [1.0]})
    import pyarrow as pa

    with pytest.raises(StorageError, match=r"AAA\.parquet \(sequences stage\): No space left"):
        write_sequence_file(tmp_path / "AAA.parquet", pa.Table.from_pandas(table))
    with pytest.raises(StorageError, match=r"report\.html \(report stage\): No space left"):
        write_text(tmp_path / "report.html", "<html></html>", "report")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    monkeypatch.setattr(BacktestResult, "export_points", lambda self: table)
    with pytest.raises(StorageError, match=r"points\.parquet \(backtest stage\)"):
        BacktestResult.write_points(object.__new__(BacktestResult), tmp_path / "points.parquet")


def test_a_model_that_cannot_be_saved_names_its_file(tmp_path: Path) -> None:
    from pipeline.model.store import save_network

    class FullDisk:
        def save(self, path: Path) -> None:
            Path(path).write_bytes(b"half a network")
            raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "models" / "model-v00001.keras"
    with pytest.raises(StorageError, match=r"model-v00001\.keras \(train stage\): No space"):
        save_network(FullDisk(), target)  # type: ignore[arg-type]
    assert list(target.parent.iterdir()) == []


_ON_A_FULL_DISK = """
import sys
from pathlib import Path
from pipeline.errors import StorageError
from pipeline.files import write_text
target = Path(sys.argv[1]) / "reports" / "report-2024-03-22.html"
write_text(target, "<html>small</html>", "report")
try:
    write_text(target, "x" * 200_000, "report")
except StorageError as exc:
    print(exc)
    print(target.read_text())
"""


def test_a_real_full_disk_names_the_path_and_keeps_the_old_file(tmp_path: Path) -> None:
    """On a 64 kB tmpfs (a mount namespace of its own, where the machine allows one)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    mount = tmp_path / "small"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
    )
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    script = f'mount -t tmpfs -o size=64k tmpfs {mount} && exec "$0" -c "$1" {mount}'
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, sys.executable, _ON_A_FULL_DISK],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    message, old = done.stdout.splitlines()[:2]
    target = mount / "reports" / "report-2024-03-22.html"
    assert message.startswith(f"cannot write {target} (report stage): No space left on device")
    assert "[ENOSPC]; the disk is full; free space on the filesystem of" in message
    assert old == "<html>small</html>"


def test_a_real_busy_sqlite_database_is_transient(tmp_path: Path) -> None:
    """Another connection holds the file past the busy timeout: SQLite's ``database is
    locked``, raw from ``sqlite3`` and wrapped by SQLAlchemy, is retried (the writer ends)."""
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        waiter = sqlite3.connect(path, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as raw:
            waiter.execute("INSERT INTO t VALUES (1)")
        waiter.close()
        assert is_transient(raw.value)
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        with (
            pytest.raises(sa_exc.OperationalError, match="database is locked") as wrapped,
            engine.begin() as conn,
        ):
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        engine.dispose()
        assert is_transient(wrapped.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Any other SQLite failure stays deterministic.
    assert not is_transient(sqlite3.OperationalError("no such table: prices"))
