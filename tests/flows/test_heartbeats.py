"""Which flow runs send Prefect heartbeats (flows/heartbeats.py)."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.settings import get_current_settings

from flows.heartbeats import HEARTBEAT_VARIABLES, for_command_runs, without_heartbeats


@flow
def heartbeat_setting() -> int | None:
    """The heartbeat frequency the engine read for this run (it reads the same settings)."""
    return get_current_settings().flows.heartbeat_frequency


@flow
def parent() -> tuple[int | None, int | None]:
    """A run with a subflow started as pricecast starts its subflows."""
    with without_heartbeats():
        child = heartbeat_setting()
    return get_current_settings().flows.heartbeat_frequency, child


@pytest.fixture
def no_heartbeat_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HEARTBEAT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_prefect_sends_heartbeats_by_default(no_heartbeat_variables: None) -> None:
    # The premise of the module: without it, every run starts the heartbeat thread.
    assert heartbeat_setting() is not None


def test_command_runs_send_none(no_heartbeat_variables: None) -> None:
    with for_command_runs():
        assert heartbeat_setting() is None
    assert heartbeat_setting() is not None  # the setting is restored after the block


def test_the_environment_turns_them_back_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prefect read the variable when it started; the block must then leave its value alone.
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with for_command_runs():
        assert heartbeat_setting() == get_current_settings().flows.heartbeat_frequency
        assert heartbeat_setting() is not None


def test_subflows_send_none_while_the_parent_does(no_heartbeat_variables: None) -> None:
    own, child = parent()
    assert own is not None
    assert child is None
