"""Serve pricecast's deployments from one process, without a work pool (``pricecast serve``).

For a single machine: one long-running process registers the deployments of
``deployments/prefect.yaml`` (``daily``, ``weekly-retrain``, ``backfill``)
with the Prefect API, with the same schedules, parameters and concurrency
limits, and runs their flow runs in subprocesses of its own. It reads
``prefect.yaml`` rather than repeating it; only the work pool and the pull
steps are left out (the flows are imported from the installed ``flows``
package). The ``env`` of the work pool's job variables is applied to this
process's environment where not set, so flow runs see the same variables.

Run ``pricecast serve`` or ``python -m deployments.serve`` (from any folder:
``prefect.yaml`` is read from the installed package), or call :func:`main`;
``python -m deployments.serve --prefect-file`` prints where that file is, for
``prefect deploy --prefect-file`` (deployments/README.md).
Stop it with Ctrl-C; its schedules are then paused until it serves again.
Do not serve while a worker deployment of the same names is in use: serving
re-registers ``daily-pipeline/daily`` and the others without a work pool.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Schedule
from prefect.types.entrypoint import EntrypointType

from flows import use_prefect_defaults
from pipeline.errors import ConfigurationError

#: The deployments' one definition, package data of ``deployments``.
PREFECT_FILE = resources.files("deployments") / "prefect.yaml"


def read_deployment_configs(path: Traversable = PREFECT_FILE) -> list[dict[str, Any]]:
    """The ``deployments:`` entries of a ``prefect.yaml``, with its anchors resolved.

    Raises:
        ConfigurationError: the file cannot be read or has no deployments.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    deployments = (document or {}).get("deployments") if isinstance(document, dict) else None
    if not deployments:
        raise ConfigurationError(f"{path} declares no deployments")
    return list(deployments)


def load_flow(entrypoint: str) -> Flow[..., Any]:
    """The flow of a module-path entrypoint such as ``flows.daily.daily_pipeline``.

    The flow is imported from its installed package, so served runs do not
    depend on the working directory (as a worker's runs of the same
    entrypoints do not: Prefect imports a module path without a pull step).

    Raises:
        ConfigurationError: the entrypoint does not name a flow of an importable module.
    """
    module_name, _, name = entrypoint.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(
            f"entrypoint {entrypoint!r} names no importable flow (expected a module path, "
            "package.module.flow)"
        ) from exc
    if not isinstance(found, Flow):
        raise ConfigurationError(f"entrypoint {entrypoint!r} is not a Prefect flow")
    return found


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """A Prefect schedule from one ``schedules:`` entry of ``prefect.yaml`` (cron only).

    Raises:
        ConfigurationError: the entry is not a cron schedule.
    """
    if "cron" not in config:
        raise ConfigurationError(f"only cron schedules can be served, not {dict(config)}")
    return Cron(
        config["cron"],
        timezone=config.get("timezone"),
        day_or=config.get("day_or", True),
        active=config.get("active", True),
        parameters=dict(config.get("parameters") or {}),
        slug=config.get("slug"),
    )


def concurrency_from_config(
    value: int | Mapping[str, Any] | None,
) -> int | ConcurrencyLimitConfig | None:
    """A deployment concurrency limit from ``prefect.yaml``'s ``concurrency_limit`` field."""
    if value is None or isinstance(value, int):
        return value
    options: dict[str, Any] = {"limit": value["limit"]}
    if value.get("collision_strategy"):
        options["collision_strategy"] = ConcurrencyLimitStrategy(value["collision_strategy"])
    if value.get("grace_period_seconds") is not None:
        options["grace_period_seconds"] = value["grace_period_seconds"]
    return ConcurrencyLimitConfig(**options)


def build_deployments(path: Traversable = PREFECT_FILE) -> list[RunnerDeployment]:
    """One served deployment per entry of ``prefect.yaml``, without its work pool."""
    deployments = []
    for config in read_deployment_configs(path):
        flow = load_flow(config["entrypoint"])
        deployments.append(
            flow.to_deployment(
                name=config["name"],
                description=config.get("description"),
                tags=list(config.get("tags") or []),
                parameters=dict(config.get("parameters") or {}),
                schedules=[schedule_from_config(entry) for entry in config.get("schedules") or []],
                concurrency_limit=concurrency_from_config(config.get("concurrency_limit")),
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def job_environment(path: Traversable = PREFECT_FILE) -> dict[str, str]:
    """The ``env`` job variables of the deployments of ``prefect.yaml``, merged."""
    env: dict[str, str] = {}
    for config in read_deployment_configs(path):
        job_variables = (config.get("work_pool") or {}).get("job_variables") or {}
        env.update({name: str(value) for name, value in (job_variables.get("env") or {}).items()})
    return env


def main() -> None:
    """Serve the deployments of ``deployments/prefect.yaml`` until interrupted.

    The flow runs are subprocesses: they inherit the work pool's ``env`` and
    pricecast's Prefect defaults set here. This process read its own Prefect
    settings when it imported Prefect; ``pricecast serve`` sets the defaults
    before that.
    """
    use_prefect_defaults()
    for name, value in job_environment().items():
        os.environ.setdefault(name, value)
    serve(*build_deployments())


def command_line(argv: Sequence[str]) -> int:
    """``python -m deployments.serve``: serve; with ``--prefect-file``, print where the
    installed ``prefect.yaml`` is (for ``prefect deploy --prefect-file``) and exit."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.serve", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--prefect-file",
        action="store_true",
        help="print the path of the installed prefect.yaml and exit",
    )
    if parser.parse_args(argv).prefect_file:
        sys.stdout.write(f"{PREFECT_FILE}\n")
        return 0
    main()
    return 0


if __name__ == "__main__":
    sys.exit(command_line(sys.argv[1:]))
