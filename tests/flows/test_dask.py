"""Per-shard work on a Dask cluster: the same forecasts and backtests as a local run.

The cluster is a ``distributed.LocalCluster`` of two worker processes started
here; the flows reach it by address only, as they would a real cluster.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import TINY_OVERRIDES, synthetic_prices, write_long_csv
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

import flows.runners
from flows.backtest import backtest_flow
from flows.daily import daily_pipeline
from flows.runners import FanOut, fan_out_for, split_tickers
from pipeline.db.backtests import read_backtest_metrics
from pipeline.db.forecasts import read_forecasts
from pipeline.db.migrate import open_database
from pipeline.db.prices import upsert_prices
from pipeline.db.schema import forecasts
from pipeline.errors import ConfigurationError
from pipeline.results import RunSummary
from pipeline.settings import Settings

TICKERS = ("AAA", "BBB", "CCC")
FLOAT_COLUMNS = ["yhat", "yhat_lower", "yhat_upper"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two single-threaded worker processes and a scheduler, closed after the module."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    ) as local_cluster:
        yield local_cluster


def _completed_on_cluster(cluster: distributed.LocalCluster, name: str) -> int:
    """How many tasks whose key starts with ``name`` the scheduler saw finish."""
    return sum(
        prefix.state_counts["memory"]
        for key, prefix in cluster.scheduler.task_prefixes.items()
        if key.startswith(name)
    )


def _forecasts(url: str) -> pd.DataFrame:
    engine = open_database(url)
    try:
        with engine.connect() as conn:
            return read_forecasts(conn).reset_index(drop=True)
    finally:
        engine.dispose()


def _daily_here_and_on(
    cluster: distributed.LocalCluster, tmp_path: Path, source: Path, overrides: dict
) -> tuple[RunSummary, RunSummary]:
    """The daily flow on ``source`` run locally (in ``tmp_path/local``), then on the
    cluster (in ``tmp_path/dask``): the two runs' summaries."""
    return tuple(
        daily_pipeline(
            sources=[str(source)],
            database_url=f"sqlite:///{tmp_path / name / 'pricecast.db'}",
            home=str(tmp_path / name),
            overrides=overrides,
            dask_address=address,
        )
        for name, address in (("local", None), ("dask", cluster.scheduler_address))
    )


def test_the_daily_flow_on_a_dask_cluster_writes_the_local_forecasts(
    tmp_path: Path, cluster: distributed.LocalCluster
) -> None:
    source = write_long_csv(synthetic_prices(TICKERS, days=60), tmp_path / "p.csv")
    local, dask = _daily_here_and_on(cluster, tmp_path, source, TINY_OVERRIDES)
    assert dask.forecast == local.forecast
    assert dask.sequences == local.sequences
    assert local.forecast.forecasts_written == 15  # 3 tickers x 5 trading days
    # Two worker threads: two shards per stage, and each ran as a task on the cluster.
    assert _completed_on_cluster(cluster, "sequences_shard") >= 2
    assert _completed_on_cluster(cluster, "forecast_shard") >= 2

    expected, actual = _forecasts(local.database), _forecasts(dask.database)
    keys = [column for column in expected.columns if column not in FLOAT_COLUMNS]
    pd.testing.assert_frame_equal(actual[keys], expected[keys])
    np.testing.assert_allclose(
        actual[FLOAT_COLUMNS].to_numpy(float), expected[FLOAT_COLUMNS].to_numpy(float), rtol=1e-9
    )


def test_a_backtest_on_a_dask_cluster_stores_the_local_metrics(
    tmp_path: Path, cluster: distributed.LocalCluster
) -> None:
    results, metrics = {}, {}
    for name, address in (("local", None), ("dask", cluster.scheduler_address)):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        engine = open_database(url)
        with engine.begin() as conn:
            upsert_prices(conn, synthetic_prices(("AAA", "BBB"), days=100))
        results[name] = backtest_flow(
            folds=2, horizon=2, database_url=url, overrides=TINY_OVERRIDES, dask_address=address
        )
        with engine.connect() as conn:
            metrics[name] = read_backtest_metrics(conn, results[name].run_id)
        engine.dispose()
    assert results["dask"].run_id == results["local"].run_id
    # Per fold: the baselines and the default variant, each a task on the cluster.
    assert _completed_on_cluster(cluster, "backtest_unit") >= 4
    # The GARCH fit (arch's SLSQP optimiser) is not bitwise the same in another process
    # (measured: 2e-4 relative in the interval widths); every other model is.
    garch = metrics["local"]["model"] == "naive_garch"
    pd.testing.assert_frame_equal(metrics["dask"][~garch], metrics["local"][~garch], rtol=1e-9)
    pd.testing.assert_frame_equal(metrics["dask"][garch], metrics["local"][garch], rtol=1e-2)


def test_without_an_address_shards_run_on_local_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRICECAST_DASK_ADDRESS", "PRICECAST_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    default = fan_out_for(Settings())
    assert default == FanOut(None, 1) and not default.parallel  # one task, as before
    threads = fan_out_for(Settings(workers=3))
    assert threads == FanOut(None, 3) and threads.parallel
    runner = threads.task_runner()
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_the_address_parameter_wins_over_the_setting(
    monkeypatch: pytest.MonkeyPatch, cluster: distributed.LocalCluster
) -> None:
    monkeypatch.delenv("PRICECAST_WORKERS", raising=False)
    address = cluster.scheduler_address
    monkeypatch.setenv("PRICECAST_DASK_ADDRESS", "tcp://192.0.2.1:8786")  # never reached
    assert fan_out_for(Settings(), address) == FanOut(address, 2)  # the cluster's threads
    monkeypatch.setenv("PRICECAST_DASK_ADDRESS", address)
    assert fan_out_for(Settings()) == FanOut(address, 2)
    fan = fan_out_for(Settings(workers=5))
    assert fan == FanOut(address, 5)
    runner = fan.task_runner()
    assert isinstance(runner, DaskTaskRunner) and runner.address == address


def test_a_missing_dask_extra_or_scheduler_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "prefect_dask", None)  # as if not installed
        with pytest.raises(ConfigurationError, match=r"pip install 'pricecast\[dask\]'"):
            fan_out_for(Settings(dask_address="tcp://127.0.0.1:8786"))
    monkeypatch.setattr(flows.runners, "DASK_CONNECT_TIMEOUT", "2s")
    with pytest.raises(ConfigurationError, match="cannot reach the Dask scheduler at tcp://"):
        fan_out_for(Settings(dask_address="tcp://127.0.0.1:9", workers=2))


@pytest.mark.parametrize(
    ("tickers", "shards", "expected"),
    [
        (["CCC", "AAA", "BBB"], 2, [["AAA", "BBB"], ["CCC"]]),
        (["A", "B", "C", "D", "E"], 2, [["A", "B", "C"], ["D", "E"]]),
        (["A", "B"], 5, [["A"], ["B"]]),
        (["A", "B"], 1, [["A", "B"]]),
        ([], 3, []),
    ],
)
def test_tickers_split_into_ordered_contiguous_shards(
    tickers: list[str], shards: int, expected: list[list[str]]
) -> None:
    assert split_tickers(tickers, shards) == expected


def test_shards_on_local_threads_write_the_serial_forecasts(tmp_path: Path, db_url: str) -> None:
    source = write_long_csv(synthetic_prices(TICKERS, days=60), tmp_path / "p.csv")
    params = {"sources": [str(source)], "database_url": db_url, "home": str(tmp_path / "home")}
    serial = daily_pipeline(**params, overrides=TINY_OVERRIDES)
    expected = _forecasts(db_url)
    engine = open_database(db_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(forecasts))
    engine.dispose()
    threads = daily_pipeline(**params, overrides={**TINY_OVERRIDES, "workers": 2})
    assert threads.model.action == "reuse"
    assert threads.forecast == serial.forecast
    assert threads.sequences == serial.sequences
    pd.testing.assert_frame_equal(_forecasts(db_url), expected)


@pytest.fixture
def restored_library_logging() -> Iterator[None]:
    """The command line sets up the ``pipeline`` logger; undo it after an in-process call."""
    library = logging.getLogger("pipeline")
    handlers, level, propagate = list(library.handlers), library.level, library.propagate
    yield
    library.handlers[:] = handlers
    library.setLevel(level)
    library.propagate = propagate


@pytest.mark.usefixtures("restored_library_logging")
def test_the_backtest_command_on_local_threads_prints_the_serial_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flows.cli
    import flows.commands

    monkeypatch.setattr(flows.commands, "quiet_console_tracebacks", lambda *args: None)  # cosmetic
    for name, value in TINY_OVERRIDES.items():
        monkeypatch.setenv(f"PRICECAST_{name.upper()}", str(value))
    monkeypatch.delenv("PRICECAST_DASK_ADDRESS", raising=False)
    url = f"sqlite:///{tmp_path / 'bt.db'}"
    engine = open_database(url)
    with engine.begin() as conn:
        upsert_prices(conn, synthetic_prices(("AAA", "BBB"), days=100))
    engine.dispose()
    records = {}
    for name, extra in (("serial", []), ("threads", ["--workers", "2"])):
        path = tmp_path / f"{name}.json"
        command = ["backtest", "--database-url", url, "--folds", "2", "--json", str(path)]
        points = tmp_path / f"{name}.csv"
        assert flows.cli.main([*command, "--points", str(points), *extra]) == 0
        records[name] = pd.read_json(path)
        assert len(pd.read_csv(points)) == records[name]["n"].sum()
    output = capsys.readouterr().out
    assert output.count("backtest ") == 2 and "default *" in output
    pd.testing.assert_frame_equal(records["threads"], records["serial"], rtol=1e-9)


def _registry(url: str) -> dict[str, list[dict]]:
    """The registry's rows, without what differs between two runs of the same training:
    when it ran and where its files are (their bytes hold Keras' time of saving)."""
    engine = open_database(url)
    varying = {"trained_at", "file_path", "file_sha256", "files_deleted_at"}
    try:
        with engine.connect() as conn:
            return {
                name: [
                    {key: value for key, value in row.items() if key not in varying}
                    for row in conn.execute(sa.text(f"select * from {name} order by 1, 2"))
                    .mappings()
                    .all()
                ]
                for name in ("models", "model_tickers")
            }
    finally:
        engine.dispose()


def test_grouped_networks_train_as_tasks_on_the_cluster_as_they_train_here(
    tmp_path: Path, cluster: distributed.LocalCluster
) -> None:
    """Three ticker groups, one network each: on the cluster each is fitted in its own
    task (in a worker process, from the data the task carries, its file coming back as
    bytes); the version registered and its forecasts are those of the local run."""
    tickers = ("AAA", "BBB", "CCC", "FFF")  # groups of 3: AAA and BBB, CCC, FFF
    source = write_long_csv(synthetic_prices(tickers, days=60), tmp_path / "p.csv")
    before = _completed_on_cluster(cluster, "fit_job")
    local, dask = _daily_here_and_on(
        cluster, tmp_path, source, {**TINY_OVERRIDES, "ticker_groups": 3}
    )
    assert _completed_on_cluster(cluster, "fit_job") - before == 3
    assert local.model.created and local.model.promoted
    varying = {"fit_seconds", "samples_per_second"}
    assert dask.model.model_dump(exclude=varying) == local.model.model_dump(exclude=varying)
    assert _registry(dask.database) == _registry(local.database)
    folder = Path(_registry_path(local.database))
    assert sorted(file.name for file in folder.iterdir()) == [
        f"group-{number}-of-3.keras" for number in (1, 2, 3)
    ]
    # The networks' weights are bitwise those of the local run, so are the forecasts.
    pd.testing.assert_frame_equal(_forecasts(dask.database), _forecasts(local.database))
    assert local.forecast.forecasts_written == 20  # 4 tickers x 5 trading days


def _registry_path(url: str) -> str:
    engine = open_database(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("select file_path from models")).scalar_one()
    finally:
        engine.dispose()
