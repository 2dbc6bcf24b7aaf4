"""End to end: the deployments on a real Prefect server, run by a process worker and by serve.

One Prefect server per module runs as a subprocess (``prefect server start``)
with its own temporary ``PREFECT_HOME``, no UI and no scheduler (a scheduled
run must not start a full-size pipeline here; the schedules themselves are
checked as the API stores them). Every Prefect command runs as a subprocess
with an explicit environment: that server's ``PREFECT_API_URL``, analytics
off, and no ``PREFECT_*`` or ``PRICECAST_*`` variable of the test process, so
neither Prefect's test harness nor the developer's settings leak in.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import TINY_OVERRIDES, synthetic_prices, write_long_csv

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "pricecast"
START_TIMEOUT = 120
RUN_TIMEOUT = 300
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class PrefectServer:
    """A Prefect server subprocess and the environment of the commands that use it."""

    api_url: str
    env: dict[str, str]
    logs: Path

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the server's REST API; returns the decoded JSON."""
        response = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def deployment(self, name: str) -> dict[str, Any]:
        """A deployment by ``flow-name/deployment-name``."""
        return self.api("GET", f"/deployments/name/{name}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} was not written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    """Stop a process started in its own session, and the children of that session."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signum)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _start(
    command: list[str], env: Mapping[str, str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen:
    """Start a long-running command in its own session, its output into ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _prefect(server: PrefectServer, *args: str, timeout: float = 120, cwd: Path = ROOT) -> str:
    """Run one Prefect command against the server; returns its output, fails with it."""
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args],
        cwd=cwd,
        env=server.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server on a free local port, with its own home and database."""
    base = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "PRICECAST_"))
    }
    env.update(
        PREFECT_HOME=str(base / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Anything that would fall back to the defaults writes here, not in ~/.pricecast.
        PRICECAST_HOME=str(base / "stray-home"),
    )
    server = PrefectServer(env["PREFECT_API_URL"], env, base)
    log = base / "server.log"
    process = _start(
        [
            PREFECT,
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
            "--no-scheduler",
            "--no-late-runs",
        ],
        env,
        log,
        cwd=base,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"the Prefect server exited:\n{_tail(log)}"
            try:
                if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no Prefect server after {START_TIMEOUT} s"
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


def _wait_for_run(server: PrefectServer, flow_run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = server.api("GET", f"/flow_runs/{flow_run_id}")
        if run["state_type"] in TERMINAL_STATES or time.monotonic() > deadline:
            return run
        time.sleep(1)


def _runs_of(server: PrefectServer, deployment_id: str) -> list[dict[str, Any]]:
    return server.api(
        "POST",
        "/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}},
    )


def _forecast_counts(database: Path) -> dict[tuple[str, str, int], int]:
    """Forecast rows per (ticker, as-of date, model version)."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "select ticker, as_of_date, model_version, count(*) from forecasts "
            "group by ticker, as_of_date, model_version"
        ).fetchall()
    return {(ticker, str(as_of), version): count for ticker, as_of, version, count in rows}


def _parameters(tmp_path: Path, **more: Any) -> dict[str, Any]:
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "prices.csv")
    return {
        "sources": [str(source)],
        "database_url": f"sqlite:///{tmp_path / 'pricecast.db'}",
        "home": str(tmp_path / "home"),
        "overrides": TINY_OVERRIDES,
        **more,
    }


def test_prefect_yaml_deploys_and_a_worker_runs_the_daily_deployment(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    server = prefect_server
    _prefect(server, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    # Deployed and run from a folder outside the checkout, as from a wheel: the file
    # is the installed package's, and the flows are imported by their module paths.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    prefect_file = subprocess.run(
        [sys.executable, "-m", "deployments.serve", "--prefect-file"],
        cwd=elsewhere,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert Path(prefect_file).name == "prefect.yaml"
    _prefect(server, "deploy", "--all", "--prefect-file", prefect_file, cwd=elsewhere)

    daily = server.deployment("daily-pipeline/daily")
    weekly = server.deployment("daily-pipeline/weekly-retrain")
    backfill = server.deployment("backfill/backfill")
    for deployment, cron, mode in (
        (daily, "30 17 * * 1-5", "auto"),
        (weekly, "0 6 * * 6", "retrain"),
        (backfill, None, "auto"),
    ):
        schedules = [
            (entry["schedule"]["cron"], entry["schedule"]["timezone"], entry["active"])
            for entry in deployment["schedules"]
        ]
        assert schedules == ([(cron, "America/New_York", True)] if cron else [])
        assert deployment["parameters"]["mode"] == mode
        assert deployment["work_pool_name"] == POOL
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert not deployment["pull_steps"]  # nothing to pull: the flows are installed
        assert deployment["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "pipeline"
    assert daily["entrypoint"] == "flows.daily.daily_pipeline"
    assert daily["parameters"]["as_of_date"] is None  # scheduled runs take their own date
    assert backfill["entrypoint"] == "flows.backfill.backfill"
    assert backfill["parameter_openapi_schema"]["required"] == ["start_date", "end_date"]

    # No horizon parameter: PRICECAST_HORIZON of the worker's environment reaches the run.
    parameters = _parameters(tmp_path, as_of_date="2024-03-15")
    _prefect(
        server, "deployment", "run", "daily-pipeline/daily", "--params", json.dumps(parameters)
    )
    (run,) = _runs_of(server, daily["id"])

    log = tmp_path / "worker.log"
    worker = _start(
        [PREFECT, "worker", "start", "--pool", POOL, "--run-once"],
        {**server.env, "PRICECAST_HORIZON": "3"},
        log,
        cwd=elsewhere,
    )
    try:
        worker.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not finish within {RUN_TIMEOUT} s:\n{_tail(log)}")
    finally:
        _stop(worker)
    run = _wait_for_run(server, run["id"], timeout=30)
    assert run["state_type"] == "COMPLETED", f"flow run {run['state_name']}:\n{_tail(log)}"
    assert run["parameters"]["as_of_date"] == "2024-03-15"

    assert _forecast_counts(tmp_path / "pricecast.db") == {
        ("AAA", "2024-03-15", 1): 3,
        ("BBB", "2024-03-15", 1): 3,
    }
    with sqlite3.connect(tmp_path / "pricecast.db") as conn:
        models = conn.execute("select version, mode, promoted, data_through from models").fetchall()
    assert models == [(1, "retrain", 1, "2024-03-15")]
    assert not list(elsewhere.iterdir())  # neither deploy nor the worker wrote there


def test_serve_registers_the_same_deployments_and_runs_a_backfill(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    server = prefect_server
    # Switching from a worker to serve: serving updates existing deployments but
    # keeps their work pool, so they are deleted first (deployments/README.md).
    _prefect(server, "deployment", "delete", "--all")
    log = tmp_path / "serve.log"
    served = _start(
        [sys.executable, "-m", "deployments.serve"],
        {**server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        log,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert served.poll() is None, f"serve exited:\n{_tail(log)}"
            try:
                backfill = server.deployment("backfill/backfill")
                if backfill["last_polled"]:  # registered, and the runner polls
                    break
            except httpx.HTTPStatusError:
                pass
            assert time.monotonic() < deadline, f"serve did not register:\n{_tail(log)}"
            time.sleep(1)
        assert backfill["work_pool_name"] is None
        daily = server.deployment("daily-pipeline/daily")
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in daily["schedules"]] == [
            ("30 17 * * 1-5", "America/New_York")
        ]
        assert daily["global_concurrency_limit"]["limit"] == 1
        assert daily["entrypoint"] == "flows.daily.daily_pipeline"

        # Thursday and Friday; the weekend after them is skipped.
        parameters = _parameters(tmp_path, start_date="2024-03-14", end_date="2024-03-17")
        _prefect(
            server, "deployment", "run", "backfill/backfill", "--params", json.dumps(parameters)
        )
        (run,) = _runs_of(server, backfill["id"])
        run = _wait_for_run(server, run["id"], timeout=RUN_TIMEOUT)
    finally:
        _stop(served)
    assert run["state_type"] == "COMPLETED", f"backfill {run['state_name']}:\n{_tail(log)}"
    counts = _forecast_counts(tmp_path / "pricecast.db")
    assert sorted({as_of for _, as_of, _ in counts}) == ["2024-03-14", "2024-03-15"]
    assert set(counts.values()) == {5}  # the default horizon, per ticker, as-of date and model
