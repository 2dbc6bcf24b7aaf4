"""The flows' retry condition calls ``pipeline.errors.is_transient``: no harness needed,
the condition is a plain function of a state."""

from __future__ import annotations

import errno

import pytest
from prefect.task_engine import TaskRunTimeoutError

from flows.tasks import retry_on_io_errors
from pipeline.errors import MissingDataError


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (TimeoutError("socket timed out"), True),
        (TaskRunTimeoutError("the task ran out of time"), False),
        (TypeError("a bug"), False),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (MissingDataError("no prices"), False),
    ],
)
def test_only_transient_failures_are_retried(exc: BaseException, retried: bool) -> None:
    assert retry_on_io_errors(None, None, _Failed(exc)) is retried
