"""One Prefect task per stage: each is a function of ``pipeline.stages``, unchanged.

The stage functions take and return plain values (URLs, paths, dates, the
typed results of ``pipeline.results``), never engines or models, so Prefect
may pickle what a task returns and run it in another process. Retries are for
transient I/O only (a lost connection, a timeout, an HTTP 5xx:
``pipeline.errors.is_transient``): anything else (bad input, missing data, a
full disk, a bug) fails at once, since retrying would fail the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.task_engine import TaskRunTimeoutError

from flows import show_library_logs
from pipeline import stages
from pipeline.errors import is_transient

IO_RETRIES = 3
IO_RETRY_DELAYS = [2, 5, 15]


def retry_on_io_errors(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry only a transient failure (a lost connection, a timeout, an HTTP 5xx:
    ``pipeline.errors.is_transient``), never a deterministic one, nor the task running
    out of time (a retry would wait as long again)."""
    try:
        state.result()
    except TaskRunTimeoutError:
        return False
    except Exception as exc:  # noqa: BLE001 - classified, not swallowed
        return is_transient(exc)
    return False


_IO = {
    "retries": IO_RETRIES,
    "retry_delay_seconds": IO_RETRY_DELAYS,
    "retry_condition_fn": retry_on_io_errors,
    "cache_policy": NO_CACHE,
}


def _anywhere(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, first letting the library's logs through: a shard may run on a Dask
    worker, a process in which no flow ran (``flows.show_library_logs``)."""

    @functools.wraps(function)
    def shown(*args: Any, **kwargs: Any) -> Any:
        show_library_logs()
        return function(*args, **kwargs)

    return shown


#: Training and backtests are long and deterministic: no retries.
_ONCE = {"cache_policy": NO_CACHE}
MINUTES = 60
HOURS = 3600

prepare_database = task(name="prepare-database", timeout_seconds=5 * MINUTES, **_IO)(
    stages.prepare_database
)
ingest_task = task(name="ingest", timeout_seconds=HOURS, **_IO)(stages.ingest_sources)
latest_price_date_task = task(name="latest-price-date", timeout_seconds=5 * MINUTES, **_IO)(
    stages.latest_price_date
)
freshness_task = task(name="freshness", timeout_seconds=5 * MINUTES, **_IO)(stages.freshness)
unchanged_run_task = task(name="unchanged-run", timeout_seconds=5 * MINUTES, **_IO)(
    stages.unchanged_run
)
sequences_task = task(name="sequences", timeout_seconds=HOURS, **_IO)(stages.sequences)
sequences_shard_task = task(name="sequences-shard", timeout_seconds=HOURS, **_IO)(
    _anywhere(stages.sequences_shard)
)
train_task = task(name="train", timeout_seconds=6 * HOURS, **_ONCE)(stages.train_model)
#: The train stage in three steps, for a Dask cluster (``flows.runners.run_training``).
train_plan_task = task(name="train-plan", timeout_seconds=HOURS, **_IO)(stages.train_plan)
fit_job_task = task(name="fit-network", timeout_seconds=6 * HOURS, **_ONCE)(
    _anywhere(stages.fit_job)
)
train_finish_task = task(name="train-finish", timeout_seconds=HOURS, **_ONCE)(stages.train_finish)
forecast_task = task(name="forecast", timeout_seconds=HOURS, **_IO)(stages.forecast_prices)
forecast_shard_task = task(name="forecast-shard", timeout_seconds=HOURS, **_IO)(
    _anywhere(stages.forecast_shard)
)
forecast_rows_task = task(name="published-forecasts", timeout_seconds=5 * MINUTES, **_IO)(
    stages.forecast_rows
)
backtest_summary_task = task(name="backtest-summary", timeout_seconds=5 * MINUTES, **_IO)(
    stages.backtest_summary
)
retention_task = task(name="retention", timeout_seconds=15 * MINUTES, **_IO)(stages.retention)
report_task = task(name="report", timeout_seconds=15 * MINUTES, **_IO)(stages.report)
record_run_task = task(name="record-run", timeout_seconds=5 * MINUTES, **_IO)(
    stages.record_completed_run
)
backtest_plan_task = task(name="backtest-plan", timeout_seconds=15 * MINUTES, **_IO)(
    stages.backtest_units_plan
)
backtest_unit_task = task(name="backtest-unit", timeout_seconds=12 * HOURS, **_ONCE)(
    _anywhere(stages.backtest_unit)
)
store_backtest_task = task(name="store-backtest", timeout_seconds=HOURS, **_IO)(
    stages.store_backtest_units
)
backtest_task = task(name="backtest", timeout_seconds=12 * HOURS, **_ONCE)(stages.backtest)
