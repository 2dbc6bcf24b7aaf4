"""The ``ingested:`` line of ``pricecast run`` (``flows.commands.ingested_line``)."""

from __future__ import annotations

import pytest

from flows.commands import ingested_line
from pipeline.results import IngestSummary


def _summary(**counts: int) -> IngestSummary:
    values = {
        "run_id": "run",
        "inputs": 2,
        "inputs_loaded": 2,
        "inputs_unchanged": 0,
        "inputs_rejected": 0,
        "rows_read": 0,
        "rows_loaded": 0,
        "rows_quarantined": 0,
        "rows_deferred": 0,
        "flags": 0,
        "tickers": ["AAA"],
        "errors": [],
    }
    return IngestSummary.model_validate({**values, **counts})


@pytest.mark.parametrize(
    ("counts", "line"),
    [
        (
            {"rows_read": 6640, "rows_loaded": 6640},
            "6640 rows loaded, 0 quarantined, 0 deferred of 6640 read from 2 input(s) "
            "(0 unchanged)",
        ),
        (
            {
                "rows_read": 20,
                "rows_loaded": 12,
                "rows_quarantined": 2,
                "rows_deferred": 1,
                "rows_superseded": 5,
            },
            "12 rows loaded, 2 quarantined, 5 superseded, 1 deferred of 20 read from 2 input(s) "
            "(0 unchanged)",
        ),
    ],
    ids=["nothing superseded", "some superseded"],
)
def test_the_ingested_line_adds_up_to_the_rows_read(counts: dict[str, int], line: str) -> None:
    summary = _summary(**counts)
    assert ingested_line(summary) == line
    assert (
        summary.rows_loaded
        + summary.rows_quarantined
        + summary.rows_deferred
        + summary.rows_superseded
        == summary.rows_read
    )
