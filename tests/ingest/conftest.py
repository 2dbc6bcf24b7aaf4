"""Fixtures of the ingest tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_server import FeedServer


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A real HTTP server on 127.0.0.1 serving the replies a test sets."""
    server = FeedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
