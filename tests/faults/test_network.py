"""Network faults between the pipeline and its database server, through a small TCP
proxy that can drop every connection or freeze (stop forwarding)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import (
    TINY_OVERRIDES,
    drop_everything,
    synthetic_prices,
    terminate_lock_backend,
    write_long_csv,
)

from pipeline.db import engine as engines
from pipeline.db.engine import _network_limits, connect, describe_url, parse_url
from pipeline.db.lock import LockLostError, assert_lock_held, pipeline_lock
from pipeline.db.schema import run_states
from pipeline.errors import (
    DatabaseUnavailableError,
    FrozenConnectionError,
    StatementTimeoutError,
    is_transient,
)
from pipeline.run import daily_run, local_stages
from pipeline.settings import Settings

NOW = dt.datetime(2024, 3, 25, 22, 0, tzinfo=dt.UTC)
#: Never sent: the test servers trust local connections; it must appear in no error.
PASSWORD = "hunter2-secret"


class Proxy:
    """A threaded TCP proxy from 127.0.0.1:<port> to ``upstream``.

    ``drop()`` closes every connection it carries (the server sees its client go);
    ``freeze()`` stops forwarding in both directions, on open connections and new
    ones alike, while every socket stays open (a hung middlebox: the kernel still
    acknowledges what is sent, so nothing but a timeout notices).
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thawed = threading.Event()
        self._thawed.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._guard = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str, password: str | None = PASSWORD) -> str:
        """``url`` through the proxy, by default with a password that must never be
        shown (PostgreSQL's trusted local connections never send it)."""
        through = sa.make_url(url).set(host="127.0.0.1", port=self.port)
        if password is not None:
            through = through.set(password=password)
        return through.render_as_string(hide_password=False)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._guard:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                self._thawed.wait()
                data = source.recv(65536)
                if not data:
                    break
                self._thawed.wait()
                if self._closed:
                    break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self._guard:
            dropped, self._sockets = self._sockets, []
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def freeze(self) -> None:
        self._thawed.clear()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._thawed.set()
        self.drop()


def _upstream(url: str) -> tuple[str, int]:
    parsed = sa.make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or (5432 if "postgres" in url else 3306)


@pytest.fixture
def proxy(request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """A proxy to the server of the test's ``server`` parameter (PostgreSQL by default)."""
    server = getattr(request, "param", "postgres_server_url")
    running = Proxy(_upstream(request.getfixturevalue(server)))
    yield running
    running.close()


@pytest.fixture
def postgres_db_url(postgres_server_url: str) -> Iterator[str]:
    """An empty PostgreSQL database (the session's scratch one, emptied)."""
    engine = connect(postgres_server_url)
    drop_everything(engine)
    try:
        yield postgres_server_url
    finally:
        drop_everything(engine)
        engine.dispose()


#: A test of the lock's connection through the proxy, to PostgreSQL and to MariaDB.
THROUGH_EITHER_SERVER = pytest.mark.parametrize(
    "proxy",
    [
        pytest.param("postgres_server_url", marks=pytest.mark.postgres),
        pytest.param("mariadb_server_url", marks=pytest.mark.mariadb),
    ],
    indirect=True,
)


@THROUGH_EITHER_SERVER
def test_a_dropped_lock_connection_is_found_by_the_next_check(
    proxy: Proxy, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(request.node.callspec.params["proxy"])
    postgres = server.startswith("postgres")
    url = proxy.url(server, password=PASSWORD if postgres else None)
    with pipeline_lock(url, wait_seconds=5) as held:
        held.assert_held()
        with pipeline_lock(url, wait_seconds=5) as inner:  # re-entered: the same lock
            assert inner is held
        proxy.drop()
        started = time.monotonic()
        with pytest.raises(LockLostError) as lost:
            assert_lock_held(url, "training")
        assert time.monotonic() - started < 5
        message = str(lost.value)
        assert "\n" not in message and PASSWORD not in message
        assert "connection holding the pipeline lock on " in message
        assert "another run may have started" in message
        assert "stopped before training" in message
        with pytest.raises(LockLostError):  # once lost, always lost
            held.assert_held()
    # The server released it when the connection went: another run takes it at once.
    with pipeline_lock(server, wait_seconds=5):
        pass


@pytest.mark.postgres
def test_a_run_whose_lock_connection_is_killed_stops_at_the_next_stage(
    postgres_db_url: str, tmp_path: Path
) -> None:
    """Killed during the ingest, the lock's connection is missed before the sequences:
    the run stops there, and writes neither sequences, model nor run record."""
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=40), tmp_path / "p.csv")
    settings = Settings(
        database_url=postgres_db_url,
        home=tmp_path / "home",
        source=[str(source)],
        **TINY_OVERRIDES,
    )
    stages = local_stages()
    called: list[str] = []

    def ingest(*args: object):  # noqa: ANN202
        summary = stages.ingest(*args)
        terminate_lock_backend(postgres_db_url)
        return summary

    def later(name: str):  # noqa: ANN202
        def stage(*args: object) -> None:
            called.append(name)
            raise AssertionError(f"{name} ran without the lock")

        return stage

    watched = dataclasses.replace(
        stages,
        ingest=ingest,
        sequences=later("sequences"),
        train=later("train"),
        record_run=later("record_run"),
    )
    # As a backfill does: the outer run holds the lock, the daily run re-enters it.
    with (
        pipeline_lock(postgres_db_url, wait_seconds=5),
        pipeline_lock(postgres_db_url),
        pytest.raises(LockLostError, match="stopped before building sequences") as lost,
    ):
        daily_run(watched, settings, None, "auto", run_id="one", now=NOW)
    assert "\n" not in str(lost.value) and "another run may have started" in str(lost.value)
    assert called == []
    engine = connect(postgres_db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(run_states)).scalar() == 0
    engine.dispose()


@pytest.mark.postgres
def test_a_connection_frozen_while_connecting_fails_within_the_connect_timeout(
    postgres_server_url: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlike a silent port (``tests/db/test_schema.py``), the server is reachable and
    the proxy accepts: the startup packet is never answered."""
    monkeypatch.setattr(engines, "CONNECT_TIMEOUT", 2)
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="cannot connect to database") as failed:
        connect(proxy.url(postgres_server_url))
    assert time.monotonic() - started < 10
    assert PASSWORD not in str(failed.value)


@pytest.mark.mariadb
@pytest.mark.parametrize("proxy", ["mariadb_server_url"], indirect=True)
def test_a_statement_on_a_connection_frozen_after_connecting_times_out(
    mariadb_server_url: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB/MySQL: the client's read timeout (statement limit + margin) ends the wait
    (PostgreSQL: the watchdog, below)."""
    monkeypatch.setenv("PRICECAST_STATEMENT_TIMEOUT", "1")
    monkeypatch.setattr(engines, "REPLY_MARGIN", 1)
    engine = connect(proxy.url(mariadb_server_url, password=None))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(StatementTimeoutError, match="ran longer than 1 s") as failed:
                conn.execute(sa.text("SELECT 2"))
            assert time.monotonic() - started < 10
            assert "\n" not in str(failed.value)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_postgresql_statement_on_a_connection_frozen_after_connecting_fails_in_its_bound(
    postgres_server_url: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg has no client-side timeout: the watchdog closes the connection once the
    answer is overdue (statement limit + margin), and the error names the database."""
    monkeypatch.setattr(engines, "REPLY_MARGIN", 1)
    engine = connect(proxy.url(postgres_server_url), statement_timeout=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(FrozenConnectionError) as failed:
                conn.execute(sa.text("SELECT 2"))
            waited = time.monotonic() - started
        assert 1.5 < waited < 10
        message = str(failed.value)
        assert message.startswith(
            f"database {describe_url(proxy.url(postgres_server_url))} sent no answer within "
            "2 s (SELECT 2), so the connection was closed: the network to it or the server "
            "is frozen"
        )
        assert "\n" not in message and PASSWORD not in message
        assert not is_transient(failed.value)
    finally:
        proxy.close()
        engine.dispose()


@THROUGH_EITHER_SERVER
def test_a_frozen_lock_connection_fails_the_next_check_within_the_network_timeout(
    proxy: Proxy, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's connection has no statement limit (it is idle for the run), so its
    checks are bounded by PRICECAST_NETWORK_TIMEOUT: libpq's watchdog deadline, PyMySQL's
    read timeout. Before, the check waited for ever."""
    monkeypatch.setenv("PRICECAST_NETWORK_TIMEOUT", "2")
    server = request.getfixturevalue(request.node.callspec.params["proxy"])
    postgres = server.startswith("postgres")
    url = proxy.url(server, password=PASSWORD if postgres else None)
    with pipeline_lock(url, wait_seconds=5) as held:
        held.assert_held()
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(LockLostError) as lost:
            assert_lock_held(url, "training")
        waited = time.monotonic() - started
        assert 1.5 < waited < 10
        message = str(lost.value)
        assert "\n" not in message and PASSWORD not in message
        assert message.startswith(
            f"the connection holding the pipeline lock on {describe_url(url)} was lost ("
        )
        assert "stopped before training" in message
        if postgres:
            assert "it sent no answer within 2 s (PRICECAST_NETWORK_TIMEOUT)" in message
        else:
            assert "timed out" in message
        proxy.close()  # the server sees its client go, and releases the lock
    with pipeline_lock(server, wait_seconds=5):
        pass


@pytest.mark.mariadb
def test_mariadb_connections_get_keepalives_from_the_network_timeout(
    mariadb_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What libpq's keepalives_* and tcp_user_timeout do for PostgreSQL, set on PyMySQL's
    socket (it has no options for them)."""
    monkeypatch.setenv("PRICECAST_NETWORK_TIMEOUT", "12")
    engine = connect(mariadb_server_url)
    try:
        with engine.connect() as conn:
            sock = conn.connection.dbapi_connection._sock  # noqa: SLF001
            options = {
                name: sock.getsockopt(level, option)
                for name, level, option in (
                    ("keepalive", socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    ("idle", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    ("interval", socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    ("count", socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    ("user timeout ms", socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                )
            }
    finally:
        engine.dispose()
    assert options == {
        "keepalive": 1,
        "idle": 6,
        "interval": 2,
        "count": 3,
        "user timeout ms": 12000,
    }


def test_postgresql_connections_get_keepalives_and_a_tcp_user_timeout() -> None:
    limits = _network_limits(parse_url("postgresql://u@h/db"), 0, network_timeout=12)
    assert {key: limits[key] for key in limits if key != "connect_timeout"} == {
        "keepalives": 1,
        "keepalives_idle": 6,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 12000,
    }
    defaults = _network_limits(parse_url("postgresql://u@h/db?tcp_user_timeout=5"), 0)
    assert (defaults["keepalives_idle"], defaults["keepalives_interval"]) == (30, 10)
    assert "tcp_user_timeout" not in defaults  # the URL's own wins


@pytest.mark.postgres
def test_the_server_end_of_the_lock_connection_gets_keepalives_too(
    postgres_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that the server notices a client gone behind a broken network (and releases the
    lock) within about the network timeout, not the system's two hours."""
    monkeypatch.setenv("PRICECAST_NETWORK_TIMEOUT", "12")
    with pipeline_lock(postgres_db_url, wait_seconds=5) as held:
        conn = held._conn  # noqa: SLF001
        assert conn is not None
        shown = {
            name: conn.execute(sa.text(f"SHOW {name}")).scalar()
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
            )
        }
    assert shown == {
        "tcp_keepalives_idle": "6",
        "tcp_keepalives_interval": "2",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "12000",
    }


@pytest.mark.postgres
def test_a_child_forked_while_the_watchdog_holds_its_lock_still_connects(
    postgres_server_url: str,
) -> None:
    """The watchdog starts afresh in a forked child, which would otherwise wait for ever
    on a lock its parent's thread held at the fork."""
    engine = connect(postgres_server_url)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # as the watchdog's thread does while it looks at its deadlines
        with engines._WATCHDOG._changed:  # noqa: SLF001
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            forked = connect(postgres_server_url)
            with forked.connect() as conn:
                status = 0 if conn.execute(sa.text("SELECT 7")).scalar() == 7 else 2
        finally:
            os._exit(status)
    release.set()
    holder.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        pytest.fail("the forked child hung on the watchdog's lock")
    assert os.waitstatus_to_exitcode(status) == 0
