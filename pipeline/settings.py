"""Settings, read from environment variables prefixed ``PRICECAST_``.

Every setting has a documented default, so the pipeline runs on a bare
machine: an SQLite database and model files under ``PRICECAST_HOME``
(``~/.pricecast``). No source is implied: ``PRICECAST_SOURCE=demo`` (or
``--source demo``) names the bundled sample prices.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.db.limits import DatabaseFields
from pipeline.model.config import ModelConfig, ModelFields
from pipeline.sequences.config import SequenceConfig, SequenceFields
from pipeline.trading_calendar import DEFAULT_EXCHANGE


def bundled_sample_path() -> Path:
    """Path of the real sample prices shipped inside the package."""
    return Path(str(resources.files("pipeline") / "data" / "sample_prices.csv"))


def _split_list(value: object) -> object:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        return [item for item in items if item] or None
    return value


class Settings(BaseSettings, SequenceFields, ModelFields, DatabaseFields):
    """Pipeline settings; each field is read from ``PRICECAST_<NAME>``.

    The sequences' and the model's parameters are declared once, in
    ``SequenceFields`` and ``ModelFields`` (the database connections' in
    ``DatabaseFields``, which ``pipeline.db.engine.connect`` reads from the
    environment), and inherited here with their defaults, bounds and the rule
    that network intervals need the laplace loss.
    """

    model_config = SettingsConfigDict(env_prefix="PRICECAST_", extra="ignore")

    home: Path = Field(
        default=Path("~/.pricecast"),
        description="Folder for the default SQLite database, sequence files and models.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<home>/pricecast.db.",
    )
    source: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Comma-separated sources: files, folders, HTTP URL templates with "
        "{ticker}, yahoo, or demo (the bundled sample); default none (nothing is ingested).",
    )
    tickers: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="Comma-separated tickers to process; default all."
    )
    exchange: str = Field(
        default=DEFAULT_EXCHANGE,
        description="exchange_calendars code of new tickers (trading days, holidays).",
    )
    max_price: float = Field(
        default=1e9,
        gt=0.0,
        description="Prices above it are quarantined as implausible (a 1e308 close once "
        "reached the model).",
    )
    max_input_bytes: int = Field(
        default=4 * 2**30,  # pipeline.ingest.fetch.MAX_INPUT_BYTES, measured there
        gt=0,
        description="The largest input read, in bytes (4 GiB): a larger file is rejected "
        "unread, a longer HTTP body is cut off, a gzipped file may not decompress past it "
        "(a 5,000-ticker 10-year OHLCV CSV weighs about 1 GiB).",
    )
    jump_threshold: float = Field(
        default=0.25, gt=0.0, description="Flag one-day moves beyond this fraction."
    )
    http_timeout: float = Field(default=10.0, gt=0.0, description="Seconds per HTTP request.")
    http_retries: int = Field(
        default=3, ge=0, description="Retries of a failed HTTP request after the first attempt."
    )
    http_backoff: float = Field(
        default=0.5, ge=0.0, description="Seconds before the first retry; doubles each retry."
    )
    http_start: dt.date = Field(
        default=dt.date(2000, 1, 1), description="First date a feed fetches for a new ticker."
    )
    stale_policy: Literal["skip", "fail"] = Field(
        default="skip",
        description="A ticker without the last trading day's close: forecast the fresh "
        "tickers only (skip) or fail the run (fail).",
    )
    lock_wait_seconds: float = Field(
        default=6 * 3600,
        gt=0,
        description="How long a run waits for another run on the same database to finish.",
    )
    keep_unpromoted: int = Field(
        default=2,
        ge=0,
        description="Unpromoted model versions whose files retention keeps, newest first.",
    )
    keep_days: int = Field(
        default=30,
        ge=0,
        description="Retention keeps reports, and promoted versions outside the champion's "
        "lineage, this many days back from the as-of date.",
    )
    report_base_url: str | None = Field(
        default=None,
        description="URL at which <home>/reports is served (a web server, a bucket); the "
        "Prefect report artifact links the HTML report there.",
    )
    log_level: str = "INFO"
    dask_address: str | None = Field(
        default=None,
        description="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786: per-shard "
        "work (sequences, forecasts, backtest units) runs on its workers (pricecast[dask]).",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Shards each stage is split into and run at once: threads of the local "
        "pool; default 1, or on a Dask cluster its worker threads.",
    )

    train_workers: int = Field(
        default=1,
        ge=0,
        description="Processes that fit the networks: 1 fits them in a worker process, "
        "replaced every 8 networks, so TensorFlow's memory goes back to the system; 0 fits "
        "them in the run's own process (no worker start-up, about 5 s; the memory stays); "
        "more fits per-ticker networks at once. The weights are the same either way.",
    )

    @field_validator("source", "tickers", mode="before")
    @classmethod
    def _parse_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("tickers")
    @classmethod
    def _upper_tickers(cls, value: list[str] | None) -> list[str] | None:
        return [ticker.upper() for ticker in value] if value else None

    @property
    def home_path(self) -> Path:
        """The home folder with ``~`` expanded."""
        return self.home.expanduser()

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the home folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_path / 'pricecast.db'}"

    @property
    def sources(self) -> list[str]:
        """The sources to ingest (see ``pipeline.ingest.sources``); none unless configured
        (``demo`` names the bundled sample)."""
        return list(self.source) if self.source else []

    def http_options(self) -> dict[str, object]:
        """Options of HTTP feeds."""
        return {
            "timeout": self.http_timeout,
            "retries": self.http_retries,
            "backoff": self.http_backoff,
            "start": self.http_start,
        }

    def sequence_config(self) -> SequenceConfig:
        """The windowing and scaling parameters (the fields of ``SequenceFields``)."""
        return SequenceConfig(**self.model_dump(include=set(SequenceFields.model_fields)))

    def training_config(self) -> ModelConfig:
        """The network and training parameters (the fields of ``ModelFields``)."""
        return ModelConfig(**self.model_dump(include=set(ModelFields.model_fields)))
