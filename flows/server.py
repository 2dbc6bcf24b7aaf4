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
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
