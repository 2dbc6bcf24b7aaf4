"""Schema creation, revision stamps, and that migrations match the declared schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from pipeline.db.engine import connect, describe_url, parse_url
from pipeline.db.migrate import current_revision, ensure_schema, head_revision
from pipeline.db.schema import metadata
from pipeline.errors import ConfigurationError, DatabaseUnavailableError, StatementTimeoutError


def test_a_new_database_is_created_at_the_head_revision(engine: Engine) -> None:
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        tables = set(sa.inspect(conn).get_table_names())
    assert set(metadata.tables) <= tables
    assert ensure_schema(engine) == head_revision()


def test_the_database_matches_the_declared_schema(engine: Engine) -> None:
    assert _differences(engine) == []


def test_tables_without_a_revision_are_refused(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'other.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE prices (x INTEGER)"))
    with pytest.raises(ConfigurationError, match="has tables prices but no schema revision"):
        ensure_schema(engine)


def test_a_newer_revision_is_refused(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'newer.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(ConfigurationError, match="newer than this pricecast knows"):
        ensure_schema(engine)


def test_unreachable_and_invalid_urls_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(
        DatabaseUnavailableError,
        match=r"cannot connect to database postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x",
    ):
        connect("postgresql://u:secret@127.0.0.1:1/x")
    with pytest.raises(ConfigurationError, match="invalid database URL"):
        connect("not a url")
    with pytest.raises(ConfigurationError, match="no SQLAlchemy driver"):
        connect("nosuchdb://host/x")


def test_urls_are_shown_without_passwords_and_get_installed_drivers() -> None:
    assert describe_url("postgresql://me:secret@db:5432/prices") == (
        "postgresql+psycopg://me:***@db:5432/prices"
    )
    assert parse_url("mysql://root@localhost/test").drivername == "mysql+pymysql"
    assert parse_url("sqlite:////tmp/x.db").drivername == "sqlite"


def test_sqlite_folders_are_created(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'a' / 'b' / 'x.db'}")
    engine.dispose()
    assert (tmp_path / "a" / "b").is_dir()


def _differences(engine: Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return [
            diff
            for diff in compare_metadata(context, metadata)
            if not (
                isinstance(diff, tuple)
                and diff[0] == "remove_table"
                and diff[1].name == "alembic_version"
            )
        ]


def test_a_baseline_database_upgrades_to_the_declared_schema(engine: Engine) -> None:
    from alembic import command

    from pipeline.db.migrate import alembic_config

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001_baseline")
    with engine.begin() as conn:
        assert "tickers" not in sa.inspect(conn).get_table_names()
        conn.execute(
            sa.text(
                "INSERT INTO prices (ticker, trade_date, close, source) VALUES "
                "('AAA', '2024-01-02', 10, 'a.csv'), ('AAA', '2024-01-05', 11, 'a.csv')"
            )
        )
        # A model with its scaler and forecasts: rows that reference the tables the
        # upgrade rebuilds (SQLite's batch mode copies and drops them).
        conn.execute(
            sa.text(
                "INSERT INTO models (version, fingerprint, mode, trained_at, data_through, "
                "tickers, hyperparameters, val_loss, train_samples, validation_samples, "
                "epochs_run, file_path) VALUES (1, 'fp', 'retrain', '2024-01-05 22:00:00', "
                "'2024-01-05', '[\"AAA\"]', '{\"window\": 10}', 0.1, 10, 2, 1, '/m.keras')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO model_tickers (model_version, ticker, scaling, scaler_params, "
                "fit_start, fit_end) VALUES (1, 'AAA', 'minmax', '{\"min\": 1, \"max\": 2}', "
                "'2024-01-02', '2024-01-05')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO forecasts (ticker, as_of_date, target_date, model_version, "
                "horizon, yhat) VALUES ('AAA', '2024-01-05', '2024-01-08', 1, 1, 11.5)"
            )
        )
    assert ensure_schema(engine) == head_revision()
    assert _differences(engine) == []
    with engine.connect() as conn:
        universe = conn.execute(sa.text("SELECT symbol, exchange, first_date FROM tickers")).all()
        model = conn.execute(sa.text("SELECT promoted, train_through FROM models")).one()
        latest = conn.execute(sa.text("SELECT yhat, model_version FROM latest_forecasts")).all()
    assert [(row[0], row[1], str(row[2])) for row in universe] == [("AAA", "XNYS", "2024-01-02")]
    assert bool(model[0]) and str(model[1]) == "2024-01-05"
    assert [tuple(row) for row in latest] == [(11.5, 1)]


def test_an_interrupted_sqlite_upgrade_is_cleaned_up(tmp_path) -> None:  # noqa: ANN001
    from alembic import command

    from pipeline.db.migrate import alembic_config

    engine = connect(f"sqlite:///{tmp_path / 'old.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002_universe_quarantine")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE _alembic_tmp_models (version INTEGER)"))
    assert ensure_schema(engine) == head_revision()
    with engine.connect() as conn:
        assert "_alembic_tmp_models" not in sa.inspect(conn).get_table_names()
    assert _differences(engine) == []


def test_read_only_commands_open_only_an_existing_current_database(
    portable_db_url: str,
) -> None:
    """Nothing is created or upgraded for a reader: an empty database (or a missing SQLite
    file) is refused by name, and stays as it was; a pricecast database opens."""
    from pipeline.db.engine import sqlite_path
    from pipeline.db.migrate import open_database, open_existing_database

    path = sqlite_path(portable_db_url)
    expected = "does not exist" if path is not None else "holds no pricecast schema"
    with pytest.raises(ConfigurationError, match=expected):
        open_existing_database(portable_db_url)
    if path is not None:
        assert not path.exists()
    else:
        probe = connect(portable_db_url)
        assert sa.inspect(probe).get_table_names() == []
        probe.dispose()
    open_database(portable_db_url).dispose()
    reader = open_existing_database(portable_db_url)
    with reader.connect() as conn:
        assert current_revision(conn) == head_revision()
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0005_run_states'"))
        conn.commit()
    reader.dispose()
    with pytest.raises(ConfigurationError, match="at schema revision 0005_run_states, not"):
        open_existing_database(portable_db_url)


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_silent_server_fails_within_the_connect_timeout(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that accepts connections and never answers once took 132 s to fail on
    PostgreSQL, and hung PyMySQL for ever (it reads the greeting under its read
    timeout, which was unset)."""
    import socket
    import time

    from pipeline.db import engine as engines

    monkeypatch.setattr(engines, "CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nothing ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="cannot connect to database"):
            connect(f"{scheme}://u@127.0.0.1:{port}/x")
        assert time.monotonic() - started < 15


def _slow_statement(url: str, seconds: float) -> str:
    function = "pg_sleep" if url.startswith("postgresql") else "SLEEP"
    return f"SELECT {function}({seconds})"


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres_server_url", marks=pytest.mark.postgres),
        pytest.param("mariadb_server_url", marks=pytest.mark.mariadb),
    ],
)
def test_a_statement_over_the_timeout_is_cancelled_with_a_clear_error(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's statement_timeout and MariaDB's max_statement_time cancel it on the
    server; the error names the database (no password: ``describe_url``) and the
    setting to raise."""
    url_text = request.getfixturevalue(server)
    monkeypatch.setenv("PRICECAST_STATEMENT_TIMEOUT", "1")
    engine = connect(url_text)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(_slow_statement(url_text, 0.2)))  # under the limit
            with pytest.raises(StatementTimeoutError) as caught:
                conn.execute(sa.text(_slow_statement(url_text, 5)))
        message = str(caught.value)
        assert f"on database {describe_url(url_text)} ran" in message
        assert "longer than 1 s" in message and "PRICECAST_STATEMENT_TIMEOUT" in message
        with engine.connect() as conn:  # the pool's connections still work
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_pymysql_waits_for_statements_longer_than_the_connect_timeout(
    mariadb_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read timeout that bounds the greeting is raised once connected: a statement
    longer than it runs, and one longer than the statement's limit fails on the
    client even where the server would not cancel it (MySQL's max_execution_time
    covers SELECTs only)."""
    from pipeline.db import engine as engines

    monkeypatch.setattr(engines, "CONNECT_TIMEOUT", 1)
    engine = connect(mariadb_server_url, statement_timeout=60)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT SLEEP(2)")).scalar() == 0
    engine.dispose()
    monkeypatch.setattr(engines, "REPLY_MARGIN", -58)  # the client gives up at 2 s
    engine = connect(mariadb_server_url, statement_timeout=60)
    with engine.connect() as conn, pytest.raises(StatementTimeoutError, match="longer than 60 s"):
        conn.execute(sa.text("SELECT SLEEP(4)"))
    engine.dispose()


def test_a_urls_own_postgresql_options_come_after_the_statement_timeout() -> None:
    """libpq applies ``-c`` options in order: a URL's own ``statement_timeout`` wins."""
    from pipeline.db.engine import _network_limits

    given = parse_url("postgresql://u@h/db?options=-c%20statement_timeout%3D5s")
    options = _network_limits(given, 60)["options"]
    assert options == "-c statement_timeout=60000 -c statement_timeout=5s"
    assert "options" not in _network_limits(parse_url("postgresql://u@h/db"), 0)
    mysql = _network_limits(parse_url("mysql://u@h/db"), 60)
    assert mysql["read_timeout"] == mysql["connect_timeout"]  # raised once connected


def test_the_statement_timeout_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.db.limits import DEFAULT_STATEMENT_TIMEOUT, configured_statement_timeout

    assert configured_statement_timeout() == DEFAULT_STATEMENT_TIMEOUT
    monkeypatch.setenv("PRICECAST_STATEMENT_TIMEOUT", "-1")
    with pytest.raises(ConfigurationError, match="invalid PRICECAST_STATEMENT_TIMEOUT"):
        configured_statement_timeout()
