"""Where per-shard work runs: a local thread pool, or an existing Dask cluster.

The sequences and forecast stages split their tickers into shards, and a
backtest into units (a fold of the baselines or of one variant); each shard
or unit is one Prefect task, submitted by a small subflow whose task runner is
chosen here:

* a Dask cluster, when an address is given (the flow's ``dask_address``
  parameter, else ``PRICECAST_DASK_ADDRESS``): ``prefect_dask.DaskTaskRunner``
  connected to that scheduler (``pip install 'pricecast[dask]'``);
* else a local ``ThreadPoolTaskRunner`` of ``PRICECAST_WORKERS`` threads.

With neither an address nor more than one worker, the stages run as before,
one task each in the flow's own process. A flow's task runner is fixed when
it starts, hence the subflows. Every shard task receives plain values (a
database URL, a folder, dates, tickers) and opens its own database engine, so
it can run in another process or on another machine; the merged results equal
those of one task for all the tickers.

Training runs as one task in the flow's process (its networks fitted in
``PRICECAST_TRAIN_WORKERS`` local processes), except on a Dask cluster: then
the ``train-networks`` subflow plans the training in the flow's process
(``pipeline.model.train.plan_training``), fits each network (one, one per
ticker group, or one per ticker) as its own task on the cluster, and judges,
publishes and registers the version in the flow's process again. A fit task
carries its windows and returns its network file's bytes, so Dask workers need
neither the database nor the home folder.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.heartbeats import without_heartbeats
from flows.tasks import (
    backtest_unit_task,
    fit_job_task,
    forecast_shard_task,
    forecast_task,
    sequences_shard_task,
    sequences_task,
    train_finish_task,
    train_plan_task,
    train_task,
)
from pipeline.errors import ConfigurationError
from pipeline.evaluate.plan import BacktestConfig
from pipeline.evaluate.variants import Variant
from pipeline.model.config import ModelConfig
from pipeline.model.store import GLOBAL
from pipeline.results import ForecastSummary, ModelSummary, SequencesSummary
from pipeline.run import merge_forecast_summaries, merge_sequence_summaries
from pipeline.sequences.config import SequenceConfig
from pipeline.settings import Settings

#: What to install for ``DaskTaskRunner``.
DASK_EXTRA = "pricecast[dask]"
#: How long the flow waits to reach a Dask scheduler before failing.
DASK_CONNECT_TIMEOUT = "30s"


def dask_task_runner(address: str) -> TaskRunner:
    """``prefect_dask.DaskTaskRunner`` connected to the scheduler at ``address``.

    Raises:
        ConfigurationError: ``prefect-dask`` is not installed.
    """
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigurationError(
            f"a Dask address is set ({address}) but prefect-dask is not installed "
            f"({exc.name} is missing); pip install '{DASK_EXTRA}', or unset "
            "PRICECAST_DASK_ADDRESS / --dask-address to run on this machine"
        ) from exc
    return DaskTaskRunner(address=address)


def dask_threads(address: str) -> int:
    """The worker threads of the Dask cluster at ``address`` (at least 1).

    Raises:
        ConfigurationError: ``distributed`` is missing, or the scheduler cannot be reached.
    """
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigurationError(
            f"a Dask address is set ({address}) but distributed is not installed; "
            f"pip install '{DASK_EXTRA}'"
        ) from exc
    try:
        with Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False) as client:
            return max(1, sum(client.nthreads().values()))
    except (OSError, TimeoutError) as exc:
        raise ConfigurationError(
            f"cannot reach the Dask scheduler at {address} ({exc}); check the address "
            "(PRICECAST_DASK_ADDRESS or --dask-address) and that the scheduler is running"
        ) from exc


@dataclass(frozen=True)
class FanOut:
    """Where and how wide per-shard work runs.

    Attributes:
        address: the Dask scheduler's address, or ``None`` for the local pool.
        shards: how many shards a stage's tickers are split into (at most).
    """

    address: str | None = None
    shards: int = 1

    @property
    def parallel(self) -> bool:
        """Whether stages fan out at all (else they run as one task in the flow's process)."""
        return self.address is not None or self.shards > 1

    def task_runner(self) -> TaskRunner:
        """A fresh task runner for one fan-out subflow."""
        if self.address:
            return dask_task_runner(self.address)
        return ThreadPoolTaskRunner(max_workers=self.shards)

    def describe(self) -> str:
        """E.g. ``4 shards on the Dask cluster at tcp://10.0.0.5:8786``, for logs."""
        where = f"the Dask cluster at {self.address}" if self.address else "local threads"
        return f"{self.shards} shard{'s' if self.shards != 1 else ''} on {where}"


def fan_out_for(settings: Settings, dask_address: str | None = None) -> FanOut:
    """The fan-out of a run: the ``dask_address`` parameter wins over
    ``PRICECAST_DASK_ADDRESS``; ``PRICECAST_WORKERS`` shards, by default 1 locally or
    the cluster's worker threads.

    Raises:
        ConfigurationError: an address is set but ``pricecast[dask]`` is not installed
            or the scheduler cannot be reached.
    """
    address = dask_address or settings.dask_address or None
    if address is None:
        return FanOut(None, settings.workers or 1)
    dask_task_runner(address)  # fail early, before any stage ran: without the extra,
    threads = dask_threads(address)  # or when the scheduler does not answer
    return FanOut(address, settings.workers or threads)


def split_tickers(tickers: Sequence[str], shards: int) -> list[list[str]]:
    """``tickers`` sorted and cut into at most ``shards`` contiguous, near-equal, non-empty
    groups, so the groups' results, concatenated in order, are in ticker order."""
    ordered = sorted(tickers)
    size = math.ceil(len(ordered) / max(1, shards)) if ordered else 1
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def run_sequences(
    fan: FanOut,
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    config: SequenceConfig,
) -> SequencesSummary:
    """The sequences stage: one task, or one task per shard through ``fan``'s runner."""
    if not fan.parallel or not tickers:
        return sequences_task(database_url, home, as_of, tickers, config)
    with without_heartbeats():  # the calling run's heartbeat covers its subflows
        return sequences_shards.with_options(task_runner=fan.task_runner())(
            database_url, home, as_of, split_tickers(tickers, fan.shards), config
        )


def run_forecast(
    fan: FanOut,
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    horizon: int,
    model_version: int,
) -> ForecastSummary:
    """The forecast stage: one task, or one task per shard through ``fan``'s runner."""
    if not fan.parallel or not tickers:
        return forecast_task(database_url, as_of, tickers, horizon, model_version)
    with without_heartbeats():
        return forecast_shards.with_options(task_runner=fan.task_runner())(
            database_url, as_of, split_tickers(tickers, fan.shards), horizon, model_version
        )


def run_training(
    fan: FanOut,
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    mode: str,
    sequence_config: SequenceConfig,
    model_config: ModelConfig,
    workers: int = 1,
) -> ModelSummary:
    """The train stage: one task here (``workers`` local processes fit the networks),
    or, on a Dask cluster, one task per network on the cluster (``train_networks``)."""
    if fan.address is None:
        return train_task(
            database_url, home, as_of, tickers, mode, sequence_config, model_config, workers
        )
    with without_heartbeats():
        return train_networks.with_options(task_runner=fan.task_runner())(
            database_url, home, as_of, tickers, mode, sequence_config, model_config
        )


@flow(name="train-networks", log_prints=False)
def train_networks(
    database_url: str,
    home: str,
    as_of: dt.date,
    tickers: list[str] | None,
    mode: str,
    sequence_config: SequenceConfig,
    training_config: ModelConfig,
) -> ModelSummary:
    """Plan the training here, fit each network in its own task (on the flow's task
    runner: the Dask cluster), then judge, publish and register the version here.
    (``training_config`` is ``train``'s ``model_config``: a flow's parameters are a
    pydantic model, to which ``model_config`` means something else.)"""
    plan = train_plan_task(
        database_url, home, as_of, tickers, mode, sequence_config, training_config
    )
    if not plan.fits:
        assert plan.result is not None
        return plan.result
    futures = [
        fit_job_task.with_options(
            task_run_name=f"fit-{'global' if job.key == GLOBAL else job.key}"
        ).submit(job)
        for job in plan.jobs
    ]
    return train_finish_task(database_url, home, plan, [future.result() for future in futures])


@flow(name="sequences-shards", log_prints=False)
def sequences_shards(
    database_url: str,
    home: str,
    as_of: dt.date,
    shards: list[list[str]],
    config: SequenceConfig,
) -> SequencesSummary:
    """Build each shard's sequences in its own task; the summary of all of them.

    Raises:
        MissingDataError: no ticker of any shard has a price up to ``as_of``.
    """
    futures = [
        sequences_shard_task.with_options(
            task_run_name=f"sequences-shard-{number}-of-{len(shards)}"
        ).submit(database_url, home, as_of, tickers, config)
        for number, tickers in enumerate(shards, start=1)
    ]
    return merge_sequence_summaries(as_of, [future.result() for future in futures], shards)


@flow(name="forecast-shards", log_prints=False)
def forecast_shards(
    database_url: str,
    as_of: dt.date,
    shards: list[list[str]],
    horizon: int,
    model_version: int,
) -> ForecastSummary:
    """Forecast each shard's tickers in its own task; the summary of all of them."""
    futures = [
        forecast_shard_task.with_options(
            task_run_name=f"forecast-shard-{number}-of-{len(shards)}"
        ).submit(database_url, as_of, tickers, horizon, model_version)
        for number, tickers in enumerate(shards, start=1)
    ]
    return merge_forecast_summaries([future.result() for future in futures])


@flow(name="backtest-units", log_prints=False)
def backtest_units(
    database_url: str,
    as_of: dt.date,
    tickers: list[str] | None,
    variants: list[Variant],
    config: BacktestConfig,
    units: list[tuple[int, int | None]],
    labels: list[str],
) -> list[list[Any]]:
    """Compute each backtest unit ``(fold, variant)`` in its own task; their points, in order."""
    futures = [
        backtest_unit_task.with_options(task_run_name=f"backtest-{label.replace(' ', '-')}").submit(
            database_url, as_of, tickers, variants, config, fold, variant
        )
        for (fold, variant), label in zip(units, labels, strict=True)
    ]
    return [future.result() for future in futures]
