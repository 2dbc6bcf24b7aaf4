"""Jobs for the tests of ``pipeline.model.network.Workers``, in a module of their own.

A worker process imports the module of the function it runs (``spawn``): this one
imports only the standard library, so a worker starts in about a second instead of the
several a test module costs (pandas, SQLAlchemy, the pipeline: about 1,200 modules).
"""

from __future__ import annotations

import logging
import os
import sys


def pid_and_square(number: int) -> tuple[int, int]:
    """A job for the workers: which process ran it, and its result."""
    logging.getLogger("pipeline.test_memory").info("squaring %d", number)
    if number < 0:
        raise ValueError(f"negative: {number}")
    return os.getpid(), number * number


def tensorflow_imported(_: int) -> tuple[int, bool]:
    """A job: which process ran it, and whether TensorFlow was imported before it."""
    return os.getpid(), "tensorflow" in sys.modules
