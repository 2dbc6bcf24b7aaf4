"""What a price source is given and what it yields: the contract between sources and ingest.

A source yields ``FetchedInput`` objects: one per file or per response, each
with its content hash and a ``parse`` that turns it into a raw batch. The
ingest stage decides from the manifest whether an input is new or changed
before parsing it, so unchanged files cost one hash.

The sources (the files in ``sources``, the HTTP feed in ``http``, Yahoo Finance
in ``yahoo``) import these types from here, and ``sources``, which picks one
from a setting string, imports the feeds: the imports run one way only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.ingest.batch import RawBatch

#: ``FetchedInput.kind`` of a file, and of a feed's response.
FILE, FEED = "file", "feed"


@dataclass(frozen=True)
class FetchContext:
    """What a source may need to know.

    Attributes:
        as_of: the run's as-of date; feeds fetch nothing after it.
        tickers: the tickers a feed fetches.
        last_dates: each ticker's newest stored trade date, for incremental feeds.
    """

    as_of: dt.date | None
    tickers: Sequence[str]
    last_dates: Mapping[str, dt.date] = field(default_factory=dict)


@dataclass(frozen=True)
class FetchedInput:
    """One file or response, fetched but not parsed.

    Attributes:
        origin: path or URL, as shown to people and stored in the manifest.
        kind: ``file`` or ``feed``.
        version: SHA-256 of the content.
        parse: reads the content into a raw batch; raises ``BatchRejected``.
        error: set instead of ``parse`` when the input could not be fetched at all.
    """

    origin: str
    kind: str
    version: str
    parse: Callable[[], RawBatch] | None = None
    error: str | None = None


class PriceSource(Protocol):
    """A source of daily prices."""

    def describe(self) -> str:
        """A short description for logs."""
        ...

    def fetch(self, context: FetchContext) -> Iterator[FetchedInput]:
        """Yield each input of this run."""
        ...
