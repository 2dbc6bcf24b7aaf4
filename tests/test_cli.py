"""The ``pricecast`` command: help, one-line errors, stage commands, the run command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import synthetic_prices, write_long_csv

from pipeline.db.engine import connect
from pipeline.db.schema import forecasts, models, prices

PRICECAST = str(Path(sys.executable).parent / "pricecast")
TINY_ENV = {
    "PRICECAST_WINDOW": "5",
    "PRICECAST_VALIDATION_FRACTION": "0.2",
    "PRICECAST_UNITS": "8",
    "PRICECAST_EPOCHS": "1",
    "PRICECAST_BATCH_SIZE": "16",
    # Tiny networks fit in the command's process: no worker start-up (about 5 s).
    "PRICECAST_TRAIN_WORKERS": "0",
}


def pricecast(*args: str, env: dict[str, str] | None = None, home: Path | None = None):  # noqa: ANN201
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRICECAST_")}
    environment.update(env or {})
    if home is not None:
        environment["PRICECAST_HOME"] = str(home)
    return subprocess.run(
        [PRICECAST, *args], capture_output=True, text=True, env=environment, timeout=600
    )


@pytest.fixture(scope="session")
def prefect_api(prefect_api_url: str) -> str:
    """The Prefect server for the commands of these tests: the test harness's (one per
    xdist worker, shared with the flow tests, ``tests/conftest.py``): each ``pricecast
    run`` would otherwise start and stop a temporary one (about 10 s of CPU). The
    temporary server itself is what
    ``test_a_background_prefect_server_is_reused_by_later_commands`` (which unsets
    ``PREFECT_API_URL``), ``tests/test_orphans.py`` and ``tests/test_wheel.py`` exercise."""
    return prefect_api_url


@pytest.fixture(autouse=True)
def _use_prefect_api(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("pricecast: ")]
    assert len(errors) == 1
    assert errors[0].startswith("pricecast: error: ")
    assert expected in errors[0]


@pytest.mark.parametrize(
    "command", [[], ["run"], ["ingest"], ["sequences"], ["train"], ["forecast"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = pricecast(*command, "--help")
    assert result.returncode == 0
    assert "--database-url" in result.stdout


def test_help_and_settings_import_no_data_libraries() -> None:
    """`pricecast --help` stays fast: the parser and the settings import neither pandas,
    NumPy, SQLAlchemy's engines nor Prefect (0.5 s to 0.2 s measured when pandas went)."""
    import subprocess
    import sys

    code = (
        "import sys, flows.cli; flows.cli.build_app(); import pipeline.settings; "
        "print(sorted(m for m in ('pandas', 'numpy', 'prefect', 'tensorflow', 'matplotlib', "
        "'jinja2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_importing_flows_sets_no_environment_the_entry_points_set_prefects_defaults() -> None:
    """`import flows` changes nothing; ``use_prefect_defaults`` (called by the command line
    and serve before Prefect is imported) fills in what the environment leaves unset."""
    code = (
        "import json, os; before = dict(os.environ); import flows, flows.cli; "
        "assert dict(os.environ) == before, 'import changed os.environ'; "
        "flows.use_prefect_defaults(); "
        "print(json.dumps({k: os.environ[k] for k in flows.PREFECT_DEFAULTS}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "true"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "true",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }


def test_usage_errors_exit_2() -> None:
    result = pricecast("forecast", "--as-of", "2024-13-01")
    assert result.returncode == 2
    assert "is not a date" in result.stderr


def test_a_missing_input_file_is_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    missing = tmp_path / "nope.csv"
    assert_one_line_error(
        pricecast("ingest", str(missing), "--database-url", db),
        f"input file {missing} does not exist",
    )
    assert_one_line_error(
        pricecast("run", "--source", str(missing), "--database-url", db, home=tmp_path),
        f"input file {missing} does not exist",
    )


def test_errors_inside_the_flow_end_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path / "prefect")}
    result = pricecast("run", "--tickers", "ZZZ", env=env, home=tmp_path / "home")
    assert_one_line_error(result, "the database holds no prices of ZZZ; nothing to forecast")


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = "postgresql://reader:secret@127.0.0.1:1/prices"
    for command in (["ingest", str(tmp_path)], ["run"], ["forecast"]):
        result = pricecast(*command, "--database-url", url, home=tmp_path)
        assert_one_line_error(result, "cannot connect to database postgresql+psycopg://reader:***@")
        assert "secret" not in result.stderr


def test_stage_commands_in_order(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    db = f"sqlite:///{tmp_path / 'stages.db'}"
    env = {**TINY_ENV, "PRICECAST_DATABASE_URL": db}
    home = tmp_path / "home"

    ingest = pricecast("ingest", str(source), env=env, home=home)
    assert ingest.returncode == 0, ingest.stderr
    assert "rows loaded: 120" in ingest.stdout

    forecast_early = pricecast("forecast", env=env, home=home)
    assert_one_line_error(forecast_early, "no model trained on data up to 2024-03-22")
    # Files are ingested whole: a ticker selection is refused, not silently ignored.
    partial = pricecast("ingest", "--tickers", "AAA", str(source), env=env, home=home)
    assert_one_line_error(partial, "files and folders are ingested whole")
    # A ticker the database does not hold is named as such (the table is not empty).
    unknown = pricecast("forecast", "--tickers", "ZZZZ", env=env, home=home)
    assert_one_line_error(unknown, "no prices of ZZZZ in the database")

    for command in (["sequences"], ["train", "--mode", "retrain"], ["forecast", "--horizon", "3"]):
        result = pricecast(*command, "--as-of", "2024-03-22", env=env, home=home)
        assert result.returncode == 0, result.stderr
    assert "forecasts: 6 written" in result.stdout
    engine = connect(db)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(forecasts)).scalar_one() == 6
        assert conn.execute(sa.select(sa.func.count()).select_from(models)).scalar_one() == 1
    # Retention by hand: the only version is the champion, nothing goes.
    gc = pricecast("gc", "--dry-run", env=env, home=home)
    assert gc.returncode == 0, gc.stderr
    assert "would delete: files of model versions none; 0 reports; 0.0 MB" in gc.stdout


def test_run_respects_the_database_url_from_the_environment(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA",), days=40), tmp_path / "p.csv")
    db_path = tmp_path / "elsewhere" / "x.db"
    env = {
        **TINY_ENV,
        "PRICECAST_DATABASE_URL": f"sqlite:///{db_path}",
        "PRICECAST_SOURCE": str(source),
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    result = pricecast("run", "-q", env=env, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    # Quiet: the summary on stdout, nothing below a warning on the console, and no
    # library log lost outside the flow run (Prefect warns of those).
    assert "INFO" not in result.stderr and "without a flow run id" not in result.stderr
    assert f"database:  sqlite:///{db_path}" in result.stdout
    assert "forecasts: 5 written" in result.stdout
    assert not (tmp_path / "home" / "pricecast.db").exists()
    engine = connect(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(forecasts)).scalar_one() == 5
        assert conn.execute(sa.select(sa.func.count()).select_from(prices)).scalar_one() == 40


def test_tickers_list_add_and_remove(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=5), tmp_path / "p.csv")
    env = {"PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}"}
    assert pricecast("ingest", str(source), env=env).returncode == 0
    removed = pricecast("tickers", "remove", "bbb", env=env)
    assert removed.returncode == 0, removed.stderr
    added = pricecast("tickers", "add", "CCC", "--exchange", "XLON", env=env)
    assert "tracking CCC on XLON (1 new)" in added.stdout
    listed = pricecast("tickers", "list", env=env).stdout.splitlines()
    assert listed[1:] == [
        "AAA        XNYS     yes    2024-01-01 2024-01-05",
        "BBB        XNYS     no     2024-01-01 2024-01-05",
        "CCC        XLON     yes    -          -         ",
    ]
    assert_one_line_error(pricecast("tickers", "remove", "ZZZ", env=env), "not tracked: ZZZ")
    assert_one_line_error(
        pricecast("tickers", "add", "DDD", "--exchange", "NOPE", env=env), "unknown exchange"
    )
    # Symbols are checked before anything is stored, on every database.
    assert_one_line_error(
        pricecast("tickers", "add", "ZZ' OR '1'='1", env=env),
        "not a ticker symbol: \"ZZ' OR '1'='1\"",
    )
    assert_one_line_error(pricecast("tickers", "add", "X" * 300, env=env), "not a ticker symbol")
    assert pricecast("tickers", "list", env=env).stdout.splitlines()[1:] == listed[1:]


def test_ingest_reports_quarantined_rows(tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("ticker,date,close\nAAA,2024-01-02,10\nAAA,2024-01-03,-1\n")
    env = {"PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    result = pricecast("ingest", str(source), env=env)
    assert result.returncode == 0, result.stderr
    assert "quarantined: 1" in result.stdout
    again = pricecast("ingest", str(source), env=env)
    assert "inputs:      1 (0 loaded, 1 unchanged, 0 rejected)" in again.stdout


def test_a_universe_is_counted_not_listed(tmp_path: Path) -> None:
    """A summary names a few tickers; of 12, the first 10 and a count."""
    names = [f"T{index:02d}" for index in range(12)]
    source = write_long_csv(synthetic_prices(tuple(names), days=3), tmp_path / "many.csv")
    few = write_long_csv(synthetic_prices(("AAA", "BBB"), days=3), tmp_path / "few.csv")
    env = {"PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'u.db'}"}
    result = pricecast("ingest", str(source), env=env)
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("tickers:"))
    assert line.split(":", 1)[1].strip() == ", ".join(names[:10]) + " and 2 more (12)"
    result = pricecast("ingest", str(few), env=env)
    assert "tickers:     AAA, BBB\n" in result.stdout


def test_ingest_applies_the_size_limit_setting(tmp_path: Path) -> None:
    big = write_long_csv(synthetic_prices(("AAA",), days=30), tmp_path / "big.csv")
    small = write_long_csv(synthetic_prices(("BBB",), days=3), tmp_path / "small.csv")
    env = {
        "PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "PRICECAST_MAX_INPUT_BYTES": str(big.stat().st_size - 1),
    }
    result = pricecast("ingest", str(big), str(small), env=env)
    assert result.returncode == 3, result.stderr
    assert f"rejected: {big}" in result.stderr
    assert f"{big}: {big.stat().st_size:,} bytes" in result.stderr
    assert "PRICECAST_MAX_INPUT_BYTES" in result.stderr
    assert "rows loaded: 3" in result.stdout
    assert "superseded:  0 (lost to another input's row)" in result.stdout


def test_exit_codes_say_when_input_was_rejected(tmp_path: Path) -> None:
    env = {"PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    # A row quarantined: success, unless --strict.
    quarantined = tmp_path / "q.csv"
    quarantined.write_text("ticker,date,close\nAAA,2024-01-02,10\nAAA,2024-01-03,-1\n")
    strict = pricecast("ingest", str(quarantined), "--strict", env=env)
    assert strict.returncode == 3 and "quarantined: 1" in strict.stdout
    # A file rejected whole (no price columns): exit 3 even without --strict, named on
    # standard error; the good file beside it is loaded.
    junk = tmp_path / "junk.csv"
    junk.write_text("hello\nworld\n")
    good = write_long_csv(synthetic_prices(("BBB",), days=3), tmp_path / "good.csv")
    result = pricecast("ingest", str(junk), str(good), env=env)
    assert result.returncode == 3, result.stderr
    # The input named once (it was printed twice: "rejected: junk.csv: junk.csv, line 1").
    assert (
        f"\nrejected: {junk}, line 1: no date column (expected one of date, trade_date, "
        "datetime, timestamp); the header is hello\n"
    ) in result.stderr
    assert "inputs:      2 (1 loaded, 0 unchanged, 1 rejected)" in result.stdout
    assert "rows loaded: 3" in result.stdout
    engine = connect(env["PRICECAST_DATABASE_URL"])
    with engine.connect() as conn:
        count = sa.select(sa.func.count()).select_from(prices).where(prices.c.ticker == "BBB")
        assert conn.execute(count).scalar_one() == 3


def test_a_run_with_a_rejected_input_goes_on_and_exits_3(tmp_path: Path) -> None:
    junk = tmp_path / "drop" / "junk.csv"
    junk.parent.mkdir()
    junk.write_text("hello\nworld\n")
    write_long_csv(synthetic_prices(("AAA",), days=40), tmp_path / "drop" / "p.csv")
    env = {
        **TINY_ENV,
        "PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    result = pricecast("run", "--source", str(junk.parent), env=env, home=tmp_path / "home")
    assert result.returncode == 3, result.stderr
    assert "forecasts: 5 written" in result.stdout
    assert f"rejected: {junk}" in result.stderr


def test_reader_role_is_for_postgresql(tmp_path: Path) -> None:
    result = pricecast("reader-role", "dash", "--database-url", f"sqlite:///{tmp_path / 'r.db'}")
    assert_one_line_error(result, "read-only roles are created on PostgreSQL")


def test_report_writes_the_html_page(tmp_path: Path) -> None:
    source = write_long_csv(synthetic_prices(("AAA",), days=40), tmp_path / "p.csv")
    env = {**TINY_ENV, "PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    home = tmp_path / "home"
    # A reader never creates the database it is pointed at.
    assert_one_line_error(pricecast("report", env=env, home=home), "r.db does not exist")
    assert_one_line_error(pricecast("tickers", "list", env=env), "r.db does not exist")
    assert not (tmp_path / "r.db").exists()
    assert pricecast("ingest", str(source), env=env, home=home).returncode == 0
    assert_one_line_error(pricecast("report", env=env, home=home), "the forecasts table is empty")
    for command in (["sequences"], ["train"], ["forecast"]):
        assert pricecast(*command, env=env, home=home).returncode == 0
    result = pricecast("report", "--output", str(tmp_path / "out.html"), env=env, home=home)
    assert result.returncode == 0, result.stderr
    assert f"report:   {tmp_path / 'out.html'}" in result.stdout
    assert (tmp_path / "out.html").read_text().count("<svg") == 1  # one ticker, one chart
    # --charts bounds the charts; the overview keeps every ticker.
    bare = tmp_path / "bare.html"
    result = pricecast("report", "--charts", "0", "--output", str(bare), env=env, home=home)
    assert result.returncode == 0, result.stderr
    assert "<svg" not in bare.read_text() and 'data-ticker="AAA"' in bare.read_text()
    result = pricecast("report", "--charts", "-1", env=env, home=home)
    assert result.returncode == 2 and "--charts" in result.stderr


def test_a_background_prefect_server_is_reused_by_later_commands(tmp_path: Path) -> None:
    """`pricecast server start` keeps a Prefect server for the home; runs use it instead of
    starting a temporary one each (15 s of a 15 s no-op run before, about 4 s after)."""
    source = write_long_csv(synthetic_prices(("AAA",), days=40), tmp_path / "p.csv")
    home = tmp_path / "home"
    env = {
        **TINY_ENV,
        "PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": "",
    }
    started = pricecast("server", "start", env=env, home=home)
    assert started.returncode == 0, started.stderr
    try:
        url = started.stdout.split()[2]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        assert pricecast("server", "status", env=env, home=home).stdout.strip() == (
            f"prefect server: {url}"
        )
        for _ in range(2):
            result = pricecast("run", "--source", str(source), env=env, home=home)
            assert result.returncode == 0, result.stderr
            assert "temporary server" not in result.stderr + result.stdout
        assert "unchanged: nothing changed" in result.stdout
    finally:
        stopped = pricecast("server", "stop", env=env, home=home)
    assert stopped.stdout.strip() == "prefect server: stopped"
    assert pricecast("server", "status", env=env, home=home).stdout.strip() == (
        "prefect server: not running"
    )


def test_the_temporary_server_starts_before_prefect_is_imported_and_stops(
    tmp_path: Path,
) -> None:
    """``start_temporary`` (what ``pricecast run`` does first without a server): the
    server starts in the background, ``PREFECT_API_URL`` points at it before Prefect is
    imported, ``wait`` returns once it answers, ``stop`` ends it; an API URL already set
    wins."""
    from flows.server import healthy, start_temporary

    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environ["PREFECT_HOME"] = str(tmp_path / "prefect")
    server = start_temporary(environ)
    assert server is not None
    try:
        assert environ["PREFECT_API_URL"] == server.url
        server.wait(timeout=180)
        assert healthy(server.url)
    finally:
        server.stop()
    assert server.process.poll() is not None and not healthy(server.url)
    assert start_temporary({"PREFECT_API_URL": "http://127.0.0.1:1/api"}) is None


def test_a_run_starts_one_temporary_server_before_its_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``start_for_run`` (what the command line does first for ``pricecast run``) starts
    the temporary server; ``run_command``'s own ``start_temporary`` then gets that same
    server, not a second one."""
    from flows import server

    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setattr(server, "_temporary", None)
    started = server.start_for_run(tmp_path / "home")
    assert started is not None
    try:
        assert os.environ["PREFECT_API_URL"] == started.url
        assert server.start_temporary() is started
    finally:
        started.stop()
    assert server.start_temporary() is None  # stopped: the URL set wins, no new server


def test_the_command_line_exits_after_its_exit_handlers_and_threads() -> None:
    """``exit_now`` (how ``pricecast`` ends, skipping the interpreter's teardown) still
    finishes the threads left running, runs the ``atexit`` handlers, flushes what was
    printed, and exits with the command's status."""
    code = (
        "import atexit, threading, time, flows.cli\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
        "print('output', end='')\n"
        "flows.cli.exit_now(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["outputthread done", "handler ran"]


def test_a_run_without_a_server_leaves_none_running(tmp_path: Path) -> None:
    """`pricecast run` without PREFECT_API_URL nor a background server runs on the
    temporary server it starts, and stops it: no Prefect server of its home is left."""
    psutil = pytest.importorskip("psutil")
    source = write_long_csv(synthetic_prices(("AAA",), days=40), tmp_path / "p.csv")
    prefect_home = str(tmp_path / "prefect")
    env = {
        **TINY_ENV,
        "PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "PREFECT_HOME": prefect_home,
        "PREFECT_API_URL": "",
    }
    result = pricecast("run", "--source", str(source), env=env, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert "forecasts:" in result.stdout
    # The first run on a new Prefect home: its server creates its database quietly (no
    # telemetry heartbeat racing the migrations: "database is locked").
    assert "Traceback" not in result.stderr and "| ERROR" not in result.stderr, result.stderr
    left = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "uvicorn" in " ".join(process.info["cmdline"] or []) and (
                process.environ().get("PREFECT_HOME") == prefect_home
            ):
                left.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert left == []
    # The run was recorded by that server, in its home's database.
    assert (tmp_path / "prefect" / "prefect.db").exists()
