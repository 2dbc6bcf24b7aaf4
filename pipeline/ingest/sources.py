"""Which source a setting string names; and the file source.

Sources are chosen by strings (``PRICECAST_SOURCE``, ``--source``):

* a path: a file, or a folder whose ``.csv``, ``.csv.gz`` and ``.parquet``
  files are taken in name order (a drop folder);
* an ``http://`` or ``https://`` URL template with ``{ticker}`` and optionally
  ``{start}`` and ``{end}`` (``YYYY-MM-DD``): the HTTP CSV feed (``http``);
* ``yahoo``: the Yahoo Finance adapter (``yahoo``, the optional ``yahoo`` extra);
* ``demo``: the real 2018 sample shipped in the package (what ``make run`` ingests).

No source is ever implied: with none configured, a run ingests nothing and says
how to configure one (``NO_SOURCE``), so a production database never receives
the demo tickers by accident.

Every source implements ``fetch.PriceSource``; the feed modules import only
``fetch``, never this module, so this one can import them. The HTTP feed is
imported when a string names it: ``httpx`` takes 0.07 to 0.2 s to import here,
which a run of files does not need.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pipeline.errors import ConfigurationError, InputFileError
from pipeline.files import sha256_bytes
from pipeline.ingest.fetch import (
    FILE,
    FetchContext,
    FetchedInput,
    PriceSource,
    over_limit,
    too_large_input,
)
from pipeline.ingest.readers import expand_sources, parse_file_bytes
from pipeline.ingest.yahoo import YahooSource

#: The source string of the bundled sample.
DEMO = "demo"
#: What a run without a source says.
NO_SOURCE = (
    "no source configured, nothing ingested: set PRICECAST_SOURCE or pass --source "
    "(files, folders, an http(s) URL template with {ticker}, yahoo; demo is the bundled "
    "2018 sample)"
)
#: Source strings that name the Yahoo Finance adapter (in any case).
_YAHOO = ("yahoo", "yahoo:", "yfinance")
#: How the URL template of an HTTP feed starts (in any case).
_HTTP = ("http://", "https://")


def resolve_demo(spec: str | Path) -> str | Path:
    """``demo`` as the path of the bundled sample; any other source string as it is."""
    if str(spec).strip().lower() == DEMO:
        from pipeline.settings import bundled_sample_path

        return bundled_sample_path()
    return spec


class FileSource:
    """Price files and drop folders.

    Each file is one input; a folder stands for its price files in name order.
    """

    def __init__(self, paths: Sequence[Path | str]) -> None:
        self.paths = [Path(path).expanduser() for path in paths]

    def describe(self) -> str:
        return "files " + ", ".join(str(path) for path in self.paths)

    def check(self) -> list[Path]:
        """The files this source stands for now.

        Raises:
            InputFileError: a path does not exist.
        """
        return expand_sources(self.paths)

    def fetch(self, context: FetchContext) -> Iterator[FetchedInput]:
        """Each file in turn; one over ``context.max_input_bytes`` is rejected unread."""
        limit = context.max_input_bytes
        for path in self.check():
            try:
                size = path.stat().st_size
                unread = limit is not None and size > limit
                payload = b"" if unread else path.read_bytes()
            except OSError as exc:
                yield FetchedInput(str(path), FILE, "", error=f"cannot read: {exc.strerror}")
                continue
            if unread:
                assert limit is not None
                yield _oversized_file(path, size, limit)
                continue
            version = sha256_bytes(payload)
            yield FetchedInput(
                str(path),
                FILE,
                version,
                parse=lambda path=path, payload=payload, version=version: parse_file_bytes(
                    path, payload, version, max_bytes=limit
                ),
            )


def _oversized_file(path: Path, size: int, limit: int) -> FetchedInput:
    """A file over the size limit, rejected without reading it. Its version is not a
    content hash (the content was not read) but one of its size and modification time."""
    stamp = f"unread:{size}:{path.stat().st_mtime_ns}"
    problem = over_limit(size, limit)
    return too_large_input(str(path), FILE, sha256_bytes(stamp.encode()), problem, limit)


def build_source(spec: str, *, http_options: Mapping[str, object] | None = None) -> PriceSource:
    """The source a setting string names (see the module docstring).

    Raises:
        ConfigurationError: the string names nothing usable.
        InputFileError: a path does not exist.
    """
    text = str(resolve_demo(spec)).strip()
    if text.lower() in _YAHOO:
        options = dict(http_options or {})
        return YahooSource(
            **{key: options[key] for key in ("start", "timeout") if key in options}  # type: ignore[arg-type]
        )
    if text.lower().startswith(_HTTP):
        from pipeline.ingest.http import HttpCsvSource

        if "{ticker}" not in text:
            raise ConfigurationError(
                f"the HTTP source {text!r} needs a {{ticker}} placeholder in its URL template"
            )
        return HttpCsvSource(text, **dict(http_options or {}))
    if not text:
        raise ConfigurationError("an empty source was given")
    source = FileSource([text])
    source.check()
    return source


def build_sources(
    specs: Sequence[str | Path], *, http_options: Mapping[str, object] | None = None
) -> list[PriceSource]:
    """The sources of several setting strings, files grouped into one file source."""
    sources: list[PriceSource] = []
    files: list[str | Path] = []
    for given in specs:
        spec = resolve_demo(given)
        text = str(spec)
        if text.lower().startswith(_HTTP) or text.lower() in _YAHOO:
            sources.append(build_source(text, http_options=http_options))
        else:
            files.append(spec)
    if files:
        file_source = FileSource(files)
        file_source.check()
        sources.insert(0, file_source)
    if not sources:
        raise InputFileError(NO_SOURCE)
    return sources
