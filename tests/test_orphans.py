"""No orphans: a killed run's helper processes end with it (``pipeline.orphans``).

Each test kills a parent with ``SIGKILL`` (no exit code of its runs) and reads the
process table (psutil) for what it had started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import synthetic_prices, write_long_csv

from pipeline.orphans import GRACE_SECONDS, POLL_SECONDS

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

ROOT = Path(__file__).resolve().parents[1]

#: A parent that starts a child (which starts a grandchild), a process of its own
#: session that is meant to outlive it, and the guardian; prints their ids; waits.
_PARENT = """
import subprocess, sys, time
from pipeline.orphans import guard_descendants
guard_descendants()
sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
child = subprocess.Popen(
    [sys.executable, "-c",
     "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(120)",
     *sleeper]
)
detached = subprocess.Popen(sleeper, start_new_session=True)
print(child.pid, detached.pid, flush=True)
time.sleep(120)
"""

#: A parent whose child asks to die with it (as the training workers do).
_WORKER_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "from pipeline.orphans import die_with_parent; import time; "
    "print(die_with_parent(), flush=True); time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}


def _gone(pids: list[int], within: float) -> list[int]:
    """The processes of ``pids`` still running (zombies aside) after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_the_guardian_ends_a_killed_parents_descendants_but_not_other_sessions() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, env=_env()
    )
    child, detached = (int(pid) for pid in parent.stdout.readline().split())
    try:
        time.sleep(4 * POLL_SECONDS)  # the guardian has noted the grandchild
        tree = [child, *(p.pid for p in psutil.Process(child).children(recursive=True))]
        assert len(tree) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(tree, within=GRACE_SECONDS) == []
        assert psutil.Process(detached).is_running()  # another session: left alone
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(detached, signal.SIGKILL)


def test_a_worker_dies_with_its_killed_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _WORKER_PARENT], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        worker = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "True"  # asked, on Linux
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone([worker], within=3) == []
    finally:
        parent.kill()


def test_a_killed_run_leaves_no_prefect_server_nor_training_worker(tmp_path: Path) -> None:
    """``kill -9`` of ``pricecast run`` while it trains: its temporary Prefect server and
    its training worker used to run on for good."""
    source = write_long_csv(synthetic_prices(("AAA", "BBB"), days=60), tmp_path / "p.csv")
    env = {
        key: value
        for key, value in _env().items()
        if not key.startswith("PRICECAST_") and key != "PREFECT_API_URL"
    }
    env.update(
        {
            "PRICECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
            "PRICECAST_HOME": str(tmp_path / "home"),
            "PRICECAST_SOURCE": str(source),
            "PRICECAST_WINDOW": "5",
            "PRICECAST_UNITS": "8",
            "PRICECAST_EPOCHS": "50",  # long enough to be caught training
            "PRICECAST_PATIENCE": "50",
            "PREFECT_HOME": str(tmp_path / "prefect"),
        }
    )
    run = subprocess.Popen(
        [str(Path(sys.executable).parent / "pricecast"), "run", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            for process in psutil.Process(run.pid).children(recursive=True):
                try:
                    seen[process.pid] = " ".join(process.cmdline())
                except psutil.NoSuchProcess:
                    continue
            server = any("uvicorn" in line for line in seen.values())
            worker = any("spawn_main" in line for line in seen.values())
            if server and worker:
                break
            time.sleep(0.1)
        assert run.poll() is None, f"the run ended before it was caught training: {seen}"
        time.sleep(2 * POLL_SECONDS)  # the guardian notes the worker too
        seen.update({p.pid: " ".join(p.cmdline()) for p in psutil.Process(run.pid).children(True)})
        run.send_signal(signal.SIGKILL)
        run.wait()
        left = _gone(list(seen), within=GRACE_SECONDS + 3)
        assert left == [], {pid: seen[pid] for pid in left}
    finally:
        run.kill()
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
