"""A local Prefect server kept running in the background, so commands skip the temporary one.

Without ``PREFECT_API_URL``, every Prefect flow call starts a temporary API
server and stops it afterwards: most of the wall time of a short ``pricecast
run`` (15 to 40 s on two cores, for a flow that takes under a second when
nothing changed). ``pricecast server start`` starts ``prefect server start`` on
127.0.0.1 in the background, records its address in
``<home>/prefect-server.json``, and every later command of the same home uses it
while it answers; ``pricecast server stop`` stops it. A ``PREFECT_API_URL`` set
by the operator always wins. This module imports nothing of Prefect: it only
starts the process and checks its health endpoint.

Without either, ``pricecast run`` starts the temporary server itself
(``start_temporary``), first thing, the way Prefect would have started it on the
flow's first call: the server (about 3 s of a new interpreter importing Prefect's
server and opening its database) then starts while the command imports Prefect,
pandas and the pipeline, instead of after; it is stopped when the command exits.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STATE = "prefect-server.json"
#: How long ``start`` waits for the new server to answer.
START_TIMEOUT = 180.0


def state_path(home: Path) -> Path:
    return home / STATE


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether the Prefect API at ``url`` (``http://host:port/api``) answers its health check."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _read(home: Path) -> dict | None:
    try:
        return json.loads(state_path(home).read_text())
    except (OSError, ValueError):
        return None


def running(home: Path) -> str | None:
    """The API URL of the server recorded in ``home``, when it answers."""
    state = _read(home)
    if state and healthy(state["url"]):
        return state["url"]
    return None


def use_running(home: Path) -> str | None:
    """Point Prefect at the server recorded in ``home`` when it answers and no
    ``PREFECT_API_URL`` is set; returns the URL used, if any. Call before importing Prefect."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    url = running(home)
    if url:
        os.environ["PREFECT_API_URL"] = url
    return url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(home: Path, port: int | None = None) -> str:
    """Start a Prefect server for ``home`` (or find the one already running); its URL.

    Raises:
        RuntimeError: the server did not answer within ``START_TIMEOUT`` seconds.
    """
    url = running(home)
    if url:
        return url
    home.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = home / "prefect-server.log"
    executable = Path(sys.executable).with_name("prefect")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(executable), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # it outlives this command
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if healthy(url, timeout=1.0):
            state_path(home).write_text(json.dumps({"url": url, "pid": process.pid}))
            return url
        if process.poll() is not None:
            break
        time.sleep(0.5)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError(f"the Prefect server did not start; see {log}")


def stop(home: Path, timeout: float = 30.0) -> bool:
    """Stop the server recorded in ``home``; False when none was recorded."""
    state = _read(home)
    state_path(home).unlink(missing_ok=True)
    if not state:
        return False
    try:
        os.killpg(int(state["pid"]), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and healthy(state["url"], timeout=0.5):
        time.sleep(0.2)
    return True


@dataclass
class TemporaryServer:
    """A Prefect API server that lives as long as one command (``start_temporary``)."""

    url: str
    process: subprocess.Popen[bytes]

    def wait(self, timeout: float | None = None) -> None:
        """Return once the server answers its health check.

        Raises:
            RuntimeError: it exited, or did not answer within ``timeout`` seconds
                (default ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, else 120).
        """
        if timeout is None:
            timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
        deadline = time.monotonic() + timeout
        while not healthy(self.url, timeout=1.0):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the temporary Prefect server exited ({self.process.returncode}) before it "
                    "answered; its messages are above"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the temporary Prefect server did not answer within {timeout:.0f} s "
                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (terminated, killed after ``timeout`` seconds); once is enough."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


#: The temporary server this process started, if any (``start_temporary`` starts one at most).
_temporary: TemporaryServer | None = None


def start_for_run(home: Path) -> TemporaryServer | None:
    """The Prefect API of a ``pricecast run`` (in ``home``), started as early as possible:
    the guardian that ends this process's descendants with it, then the background
    server recorded in ``home`` when it answers, else a temporary server
    (``start_temporary``). Call it before the run's checks and imports: the checks
    (opening and migrating the database, the sources) then run while the server starts
    instead of before it (the server's process started 0.7 to 3.2 s earlier in no-op
    runs of a 1,000-ticker state on two busy cores). ``run_command``'s own calls find
    what this started."""
    from pipeline.orphans import guard_descendants

    guard_descendants()  # a killed run takes its Prefect server and workers with it
    use_running(home)
    return start_temporary()


def start_temporary(environ: MutableMapping[str, str] | None = None) -> TemporaryServer | None:
    """Start the temporary Prefect API server of one command, without waiting for it,
    and point Prefect at it (``PREFECT_API_URL`` in ``environ``, default ``os.environ``).
    Call it before Prefect is imported (Prefect reads its settings once), and ``wait``
    before the first flow call. ``None`` when ``PREFECT_API_URL`` is set already (the
    operator's server, or ``use_running``'s), unless it points at the server this
    process started already: that server is returned.

    The server is the one Prefect itself starts when it has no API URL
    (``prefect.server.api.server.SubprocessASGIServer``: ``uvicorn`` serving
    Prefect's API on 127.0.0.1 without its UI, marked ephemeral); it is stopped at
    exit, after Prefect's own exit handlers have sent their last logs and events.
    """
    global _temporary
    environ = os.environ if environ is None else environ
    started = _temporary
    if (
        started is not None
        and started.process.poll() is None
        and environ.get("PREFECT_API_URL") == started.url
    ):
        return started  # started by ``start_for_run``: the same server, not a second
    if environ.get("PREFECT_API_URL"):
        return None
    spec = importlib.util.find_spec("prefect")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent)]
    command += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "error", "--lifespan", "on"]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    server = _temporary = TemporaryServer(url, process)
    # Registered before Prefect is imported, so it runs after Prefect's own handlers.
    atexit.register(server.stop)
    environ["PREFECT_API_URL"] = url
    logger.info("starting a temporary Prefect server on %s", url)
    return server
