"""Prefect's flow-run heartbeats: kept where they guard something, off where they only wait.

Prefect (3.9) starts a heartbeat thread with every flow run, subflows
included, so that a server can notice a run whose process died (a "zombie").
The thread sleeps in one-second steps, and a finishing run waits for it to
wake (``prefect.flow_engine._send_heartbeats``): every flow run ends on the
next whole second after its work. That is up to a second per run, which is
most of a no-op daily run's time, and up to a second per day of a backfill.

So pricecast turns the heartbeat off where nothing watches for it:

* subflows (a backfill's days, the per-shard fan-out): the parent run's
  heartbeat already speaks for the process (``without_heartbeats``);
* runs started in-process by a ``pricecast`` command: the person who typed it
  sees the process die (``for_command_runs``), unless the environment asks
  for heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``).

Runs of the deployments (a worker or ``pricecast serve`` starting them) keep
Prefect's setting: that is where a crashed run must be detected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

#: The variables that choose Prefect's heartbeat frequency (the second is its legacy name).
HEARTBEAT_VARIABLES = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


@contextmanager
def without_heartbeats() -> Iterator[None]:
    """Flow runs started inside this block send no heartbeat."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def for_command_runs() -> AbstractContextManager[None]:
    """The heartbeat setting for a flow run a ``pricecast`` command starts in its own process:
    off, unless the environment sets a heartbeat frequency."""
    if any(name in os.environ for name in HEARTBEAT_VARIABLES):
        return nullcontext()
    return without_heartbeats()
