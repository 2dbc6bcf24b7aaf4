"""Progress lines of one input of the ingest stage, for inputs large or slow enough to
need them.

A large input's progress is logged at INFO (rows so far, rate) after each stage and
every ``PROGRESS_ROWS`` rows written; any input's, when ``PROGRESS_SECONDS`` have
passed since its last line. Smaller, quicker inputs log one DEBUG line at the end
(``pipeline.ingest.load``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pandas as pd

PROGRESS_ROWS = 1_000_000
PROGRESS_SECONDS = 30.0


class Progress:
    """Progress lines of one input (``PROGRESS_ROWS``, ``PROGRESS_SECONDS``), written to
    the stage's ``logger``."""

    def __init__(self, origin: str, logger: logging.Logger) -> None:
        self.origin = origin
        self.logger = logger
        self.started = self.last = time.monotonic()

    def note(self, stage: str, done: int, total: int) -> None:
        """Log ``done`` of ``total`` rows through ``stage`` if the input is large or slow."""
        now = time.monotonic()
        if total < PROGRESS_ROWS and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        elapsed = now - self.started
        self.logger.info(
            "%s: %s %s of %s rows in %.1f s (%s rows/s)",
            self.origin,
            stage,
            f"{done:,}",
            f"{total:,}",
            elapsed,
            f"{done / elapsed:,.0f}" if elapsed > 0 else "-",
        )


def write_in_steps(
    frame: pd.DataFrame,
    write: Callable[[pd.DataFrame], int],
    progress: Progress,
    stage: str = "upserted",
) -> int:
    """``write`` of ``frame`` in steps of ``PROGRESS_ROWS`` rows, noting each as ``stage``.

    Returns:
        The sum of what ``write`` returned.
    """
    total = len(frame)
    step = max(PROGRESS_ROWS, 1)
    if total <= step:
        return write(frame)
    written = 0
    for start in range(0, total, step):
        written += write(frame.iloc[start : start + step])
        progress.note(stage, start + min(step, total - start), total)
    return written
