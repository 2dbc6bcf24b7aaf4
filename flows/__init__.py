"""Prefect flows and tasks: thin wrappers that call ``pipeline``.

Importing this package changes nothing. The entry points apply pricecast's
defaults themselves: the command line (``flows.cli.main``) and ``pricecast
serve`` call :func:`use_prefect_defaults` before they import Prefect, and
every flow calls :func:`show_library_logs` when it starts, in whichever
process runs it (the command's own, a worker's or a server's subprocess).
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

#: Prefect settings pricecast chooses when the environment does not: no analytics
#: (these machines have no internet), the ``pipeline`` library's logs captured in
#: flow-run logs, and a generous start-up time for the temporary API server that
#: runs flows without one.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def use_prefect_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set each of :data:`PREFECT_DEFAULTS` that ``environ`` does not set already.

    Prefect reads its settings from the environment once, when it is first
    imported, so call this before importing Prefect; processes started later
    (a temporary API server, served flow runs) inherit the values either way.
    A worker's flow runs get ``PREFECT_LOGGING_EXTRA_LOGGERS`` from the work
    pool's ``env`` in ``deployments/prefect.yaml`` instead.
    """
    for name, value in PREFECT_DEFAULTS.items():
        environ.setdefault(name, value)


def show_library_logs() -> None:
    """Let the ``pipeline`` library's progress (INFO) through, at ``PRICECAST_LOG_LEVEL``.

    Prefect's root logger passes only warnings, so without a level of its own
    the library's INFO records (files ingested, training epochs) never reach
    the flow-run logs. A level set already (by the command line, by a test)
    is kept.
    """
    library = logging.getLogger("pipeline")
    if library.level == logging.NOTSET:
        library.setLevel(os.environ.get("PRICECAST_LOG_LEVEL", "INFO").upper())
