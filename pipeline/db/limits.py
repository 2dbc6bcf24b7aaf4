"""Limits of database connections, as settings (no SQLAlchemy import here: the settings,
and so ``pricecast --help``, load this module)."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigurationError

#: The default of ``PRICECAST_STATEMENT_TIMEOUT``: 30 minutes. The longest legitimate
#: statements are the bulk loads of a first ingest or a backfill. On PostgreSQL a
#: million price rows take 2 s on a first load and 13 s when every row changes
#: (benchmarks/README.md, `upsert_prices`), so 5,000 tickers of 10 years (12.6
#: million rows) take about 3 minutes in the worst case: half an hour leaves a tenfold
#: margin for a slower or busy server (MariaDB's loads were not measured at that size).
#: A statement stuck behind a lock, or a server that stopped answering, then fails
#: within the half hour instead of hanging the run until the flow's 8-hour timeout.
DEFAULT_STATEMENT_TIMEOUT = 1800.0
#: The default of ``PRICECAST_NETWORK_TIMEOUT``: a minute. A healthy server answers a
#: TCP keepalive probe, or acknowledges the bytes sent to it, within milliseconds; a
#: minute tolerates a routing change or a failover of the network in between, and is
#: what the lock's one-row checks are given.
DEFAULT_NETWORK_TIMEOUT = 60.0


class DatabaseFields(BaseModel):
    """Settings of database connections (inherited by ``pipeline.settings.Settings``)."""

    statement_timeout: float = Field(
        default=DEFAULT_STATEMENT_TIMEOUT,
        ge=0,
        description="Seconds one database statement may run before the server cancels it "
        "(PostgreSQL statement_timeout, MariaDB max_statement_time; on MySQL the client "
        "stops waiting 30 s later); 0 is no limit. Not applied to the pipeline lock's "
        "connection, which stays idle for the run.",
    )
    network_timeout: float = Field(
        default=DEFAULT_NETWORK_TIMEOUT,
        gt=0,
        description="Seconds a server connection may stay silent before it is given up: "
        "TCP keepalives (probes from half of it on) and the kernel's limit on "
        "unacknowledged data (libpq tcp_user_timeout, TCP_USER_TIMEOUT on MariaDB/MySQL) "
        "for a network that drops packets, and the client's wait for an answer on the "
        "pipeline lock's connection, whose checks are one row.",
    )


class _DatabaseSettings(BaseSettings, DatabaseFields):
    model_config = SettingsConfigDict(env_prefix="PRICECAST_", extra="ignore")


def _configured() -> _DatabaseSettings:
    try:
        return _DatabaseSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = f"PRICECAST_{str(error['loc'][0]).upper()}" if error["loc"] else "a setting"
        raise ConfigurationError(f"invalid {name}: {error['msg']}") from exc


def configured_statement_timeout() -> float:
    """``PRICECAST_STATEMENT_TIMEOUT`` from the environment (seconds, 0: no limit).

    Raises:
        ConfigurationError: a database setting is not a valid number of seconds.
    """
    return _configured().statement_timeout


def configured_network_timeout() -> float:
    """``PRICECAST_NETWORK_TIMEOUT`` from the environment (seconds).

    Raises:
        ConfigurationError: a database setting is not a valid number of seconds.
    """
    return _configured().network_timeout
