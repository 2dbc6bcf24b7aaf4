"""No orphans: the helper processes of a run end with it, even when it is killed.

A run starts helper processes: Prefect's temporary API server (a ``uvicorn``
process Prefect starts and stops at exit) and, while training, worker
processes (``model.network.Workers``). Stopping them is the job of code that
runs at exit, which ``kill -9`` never lets run: every killed run used to
leave its server, and in training its workers, behind. Two guards, Linux
only (elsewhere they do nothing):

* ``die_with_parent``, called at a child's start (the training workers):
  the kernel sends it ``SIGTERM`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``).
* ``guard_descendants``, called by a command that starts processes it does not
  control (Prefect's server): a small guardian process (``python -m
  pipeline.orphans``) notes the command's descendants twice a second and,
  when the command is gone (the pipe to it closes), terminates those still
  alive; then kills any left after ``GRACE_SECONDS``. Processes in another
  session (``pricecast server start``'s server, meant to outlive the command)
  are left alone, as is any process that merely reuses a noted id.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: ``prctl`` option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: How often the guardian notes the descendants, in seconds.
POLL_SECONDS = 0.5
#: How long terminated descendants have to exit before they are killed.
GRACE_SECONDS = 5.0

_PROC = Path("/proc")


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send this process ``sig`` when its parent dies (Linux).

    Call it first thing in a child. The parent is, strictly, the thread that
    started the child: start children from a thread that outlives them. When the
    parent already died (between the start and this call), the signal is sent now.

    Returns:
        Whether the request was made (``False`` off Linux or without ``prctl``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:  # the parent died before the request: too late for the kernel
        os.kill(os.getpid(), sig)
    return True


_guardian: subprocess.Popen[bytes] | None = None


def guard_descendants() -> subprocess.Popen[bytes] | None:
    """Start a guardian that ends this process's descendants when this process ends
    (see the module docstring), once per process; ``None`` off Linux. It stops by
    itself when this process does; nothing needs to be called at exit.

    The guardian watches the pipe to its standard input, which this module keeps
    open (closing it, or losing the reference to it, would end the descendants).
    """
    global _guardian
    if not _PROC.is_dir():
        return None
    if _guardian is None or _guardian.poll() is not None:
        _guardian = subprocess.Popen(
            [sys.executable, "-m", "pipeline.orphans", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
    return _guardian


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(parent id, session id, start time)`` of a live process, from ``/proc``."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state, ppid, pgrp, session, ... starttime is field 22 of the line.
    return int(fields[1]), int(fields[3]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """The processes descending from ``root`` in its session: id to start time."""
    own = _stat(root)
    if own is None:
        return {}
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] == own[1]:
            children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _alive(noted: dict[int, int]) -> list[int]:
    return [pid for pid, started in noted.items() if (_stat(pid) or (0, 0, -1))[2] == started]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def guard(parent: int, channel: int = 0) -> list[int]:
    """The guardian: note ``parent``'s descendants until ``channel`` (the read end of
    a pipe only ``parent`` holds open) closes, then end those still alive.

    Returns:
        The processes it had to terminate.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the command
    me = os.getpid()
    noted: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([channel], [], [], POLL_SECONDS)
        if readable and not os.read(channel, 4096):
            break
        noted = {pid: started for pid, started in descendants(parent).items() if pid != me}
    left = _alive(noted)
    _signal(left, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and _alive(noted):
        time.sleep(0.1)
    _signal(_alive(noted), signal.SIGKILL)
    return left


if __name__ == "__main__":
    guard(int(sys.argv[1]))
