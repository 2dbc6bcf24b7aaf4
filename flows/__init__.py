"""Prefect flows and tasks: thin wrappers that call ``pipeline``.

Importing this package sets quiet defaults for Prefect when the environment
does not choose otherwise: no analytics (these machines have no internet),
the ``pipeline`` library's logs captured in flow-run logs, and a generous
start-up time for the temporary API server that runs flows without one.
"""

import logging
import os

for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_name, _value)

# The library logs at INFO (progress of ingestion and training); Prefect's
# root logger shows only warnings from other libraries.
_library_logger = logging.getLogger("pipeline")
if _library_logger.level == logging.NOTSET:
    _library_logger.setLevel(os.environ.get("PRICECAST_LOG_LEVEL", "INFO").upper())
