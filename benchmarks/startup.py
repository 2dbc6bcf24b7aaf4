"""Wall time of short commands as a user feels them, start-up included, cold and warm.

Run ``python -m benchmarks.startup [--repeat 3]``. In a temporary home, after one real
run on the bundled sample (tiny epochs: the model does not matter here), it times
whole commands in new processes (``/usr/bin/time``-style wall time):

* ``pricecast --help``;
* a no-op ``pricecast run -q --source demo`` (nothing new: the run finds the inputs
  unchanged), three ways:
  - **cold**: a new Prefect home, as on a machine's first run (Prefect creates and
    migrates its database, then starts its temporary server);
  - **no server**: the same home again; Prefect starts and stops its temporary
    server for the command (the default without ``pricecast server start``);
  - **warm**: ``pricecast server start`` ran once; the command uses that server.

JSON in ``benchmarks/results/startup.json``. Targets (issue 12, two idle cores): warm
no-op run at most 5 s, ``--help`` at most 0.5 s.

Measured (2-core machine, 2026-12-01, idle but for this; medians of 3): ``--help``
0.32 s; no-op run with a new Prefect home 23.7 s, with Prefect's temporary server
13.4 s, with ``pricecast server start`` 4.2 s (docs/operations.md, "Fast commands").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_JSON = Path(__file__).parent / "results" / "startup.json"

#: Settings for the set-up run: the smallest model (the no-op runs train nothing).
TINY = {"PRICECAST_EPOCHS": "1", "PRICECAST_UNITS": "8"}


def pricecast() -> str:
    """The installed entry point beside this interpreter."""
    return str(Path(sys.executable).with_name("pricecast"))


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``command`` in a new process; raises when it fails."""
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    exe = pricecast()
    run = [exe, "run", "-q", "--source", "demo"]
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PRICECAST_"))},
            **TINY,
            "PRICECAST_HOME": str(home),
            "PRICECAST_DATABASE_URL": f"sqlite:///{home / 'pricecast.db'}",
            "PREFECT_HOME": str(home / "prefect"),
        }
        started = time.perf_counter()
        subprocess.run(run, env=env, check=True, stdout=subprocess.DEVNULL)
        setup = time.perf_counter() - started
        figures: dict[str, list[float]] = {"help": [], "cold": [], "no_server": [], "warm": []}
        for _ in range(args.repeat):
            figures["help"].append(timed([exe, "--help"], env))
        for attempt in range(args.repeat):
            fresh = home / f"prefect-cold-{attempt}"
            figures["cold"].append(timed(run, {**env, "PREFECT_HOME": str(fresh)}))
            shutil.rmtree(fresh, ignore_errors=True)
        for _ in range(args.repeat):
            figures["no_server"].append(timed(run, env))
        subprocess.run([exe, "server", "start"], env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            for _ in range(args.repeat):
                figures["warm"].append(timed(run, env))
        finally:
            subprocess.run([exe, "server", "stop"], env=env, check=False)
    labels = {
        "help": "pricecast --help",
        "cold": "no-op run, new Prefect home",
        "no_server": "no-op run, temporary server",
        "warm": "no-op run, pricecast server start",
    }
    print(f"set-up run (tiny model): {setup:.1f} s")
    print(f"{'command':<36} {'median s':>9} {'min s':>7} {'max s':>7}")
    for key, values in figures.items():
        print(
            f"{labels[key]:<36} {statistics.median(values):>9.2f} "
            f"{min(values):>7.2f} {max(values):>7.2f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "setup_seconds": setup,
                "seconds": figures,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
