"""One Prefect test harness (a temporary API server and database) for all flow tests:
``prefect_api_url`` of ``tests/conftest.py``, shared with the command-line tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(prefect_api_url: str) -> str:
    return prefect_api_url
