"""deployments/serve.py builds the deployments of prefect.yaml, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.flows import load_flow_from_entrypoint

from deployments.serve import (
    PREFECT_FILE,
    build_deployments,
    command_line,
    concurrency_from_config,
    job_environment,
    load_flow,
    read_deployment_configs,
    schedule_from_config,
)
from flows.backfill import backfill
from flows.daily import daily_pipeline
from pipeline.errors import ConfigurationError

PIPELINE_DEFAULTS = {
    "tickers": None,
    "sources": None,
    "horizon": None,
    "database_url": None,
    "home": None,
    "overrides": None,
    "dask_address": None,
}


def test_the_served_deployments_are_those_of_prefect_yaml() -> None:
    served = {deployment.name: deployment for deployment in build_deployments()}
    assert list(served) == ["daily", "weekly-retrain", "backfill"]

    def schedules(name: str) -> list[tuple]:
        return [
            (entry.schedule.cron, entry.schedule.timezone, entry.active)
            for entry in served[name].schedules
        ]

    assert schedules("daily") == [("30 17 * * 1-5", "America/New_York", True)]
    assert schedules("weekly-retrain") == [("0 6 * * 6", "America/New_York", True)]
    assert schedules("backfill") == []
    assert served["daily"].parameters == {**PIPELINE_DEFAULTS, "as_of_date": None, "mode": "auto"}
    assert served["weekly-retrain"].parameters["mode"] == "retrain"
    assert served["backfill"].parameters == {**PIPELINE_DEFAULTS, "mode": "auto"}
    for deployment in served.values():
        assert deployment.concurrency_limit == 1
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
        assert deployment.work_pool_name is None
    assert served["daily"].entrypoint == "flows.daily.daily_pipeline"
    assert served["backfill"].entrypoint == "flows.backfill.backfill"
    assert job_environment() == {"PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline"}


def test_entrypoints_load_the_flows_of_the_package() -> None:
    assert load_flow("flows.daily.daily_pipeline") is daily_pipeline
    assert load_flow("flows.backfill.backfill") is backfill
    with pytest.raises(ConfigurationError, match="names no importable flow"):
        load_flow("flows.daily.nothing")
    with pytest.raises(ConfigurationError, match="names no importable flow"):
        load_flow("flows/daily.py:daily_pipeline")  # a file path: not what prefect.yaml holds
    with pytest.raises(ConfigurationError, match="is not a Prefect flow"):
        load_flow("flows.daily.build_settings")


def test_prefect_loads_every_entrypoint_as_a_module_with_nothing_to_pull() -> None:
    # What `prefect deploy` and a worker's flow run call for a module-path entrypoint
    # (one without a colon: prefect.flows.load_flow_from_flow_run imports it after the
    # deployment's pull steps, of which there are none).
    document = yaml.safe_load(PREFECT_FILE.read_text())
    assert document["pull"] == [] and document["build"] is None
    flows = {"flows.daily.daily_pipeline": daily_pipeline, "flows.backfill.backfill": backfill}
    for config in read_deployment_configs():
        assert ":" not in config["entrypoint"]
        loaded = load_flow_from_entrypoint(config["entrypoint"], use_placeholder_flow=False)
        assert loaded is flows[config["entrypoint"]]


def test_the_command_line_says_where_the_installed_prefect_file_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert command_line(["--prefect-file"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == Path(str(PREFECT_FILE)) and printed.name == "prefect.yaml"
    assert yaml.safe_load(printed.read_text())["name"] == "pricecast"


def test_schedules_and_concurrency_limits_from_yaml_fields() -> None:
    cron = schedule_from_config({"cron": "0 6 * * 6", "timezone": "UTC", "slug": "s"})
    assert (cron.cron, cron.timezone, cron.slug) == ("0 6 * * 6", "UTC", "s")
    with pytest.raises(ConfigurationError, match="only cron schedules"):
        schedule_from_config({"interval": 600})
    assert concurrency_from_config(None) is None
    assert concurrency_from_config(2) == 2
    assert concurrency_from_config(
        {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    ) == ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def test_a_file_without_deployments_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "prefect.yaml"
    empty.write_text("name: nothing\n")
    with pytest.raises(ConfigurationError, match="declares no deployments"):
        read_deployment_configs(empty)
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_deployment_configs(tmp_path / "missing.yaml")
