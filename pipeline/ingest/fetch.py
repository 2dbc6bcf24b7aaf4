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

from pipeline.ingest.batch import InputTooLarge, RawBatch

#: ``FetchedInput.kind`` of a file, and of a feed's response.
FILE, FEED = "file", "feed"


@dataclass(frozen=True)
class FetchContext:
    """What a source may need to know.

    Attributes:
        as_of: the run's as-of date; feeds fetch nothing after it.
        tickers: the tickers a feed fetches.
        last_dates: each ticker's newest stored trade date, for incremental feeds.
        max_input_bytes: the largest input read, in bytes (``PRICECAST_MAX_INPUT_BYTES``);
            a larger file is rejected without being read, a longer response body is
            cut off (``None``: no limit).
    """

    as_of: dt.date | None
    tickers: Sequence[str]
    last_dates: Mapping[str, dt.date] = field(default_factory=dict)
    max_input_bytes: int | None = None


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


#: The default size limit of one input: 4 GiB. A long CSV of 5,000 tickers over 10
#: years (12.6 million rows) weighs about 1.0 GiB with open, high, low, close,
#: adjusted close and volume at six decimals, 0.28 GiB with closes alone at two.
MAX_INPUT_BYTES = 4 * 2**30

#: The setting that bounds an input's size, as messages name it.
MAX_INPUT_SETTING = "PRICECAST_MAX_INPUT_BYTES"


def over_limit(size: int | None, limit: int, outcome: str = "rejected unread") -> str:
    """Why an input of ``size`` bytes (``None``: more than ``limit``) is not read."""
    amount = (
        f"more than {limit:,} bytes"
        if size is None
        else f"{size:,} bytes ({size / 2**20:,.1f} MiB)"
    )
    return (
        f"{amount}, over the size limit of {limit:,} bytes ({MAX_INPUT_SETTING}); "
        f"{outcome}: split the input, or raise the limit"
    )


def too_large_input(origin: str, kind: str, version: str, problem: str, limit: int) -> FetchedInput:
    """An input over the size limit, rejected before it was parsed: the ingest records it
    in the manifest as rejected with ``problem`` (its ``parse`` raises ``InputTooLarge``)."""

    def parse() -> RawBatch:
        raise InputTooLarge(origin, problem, limit)

    return FetchedInput(origin, kind, version, parse=parse)
