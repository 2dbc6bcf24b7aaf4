"""The HTTP CSV feed: one GET per ticker, from a URL template, with retries.

The source is a URL template with a ``{ticker}`` placeholder and, optionally,
``{start}`` and ``{end}``. Free daily-CSV endpoints answer one ticker per
request in the single-ticker layout (``Date,Open,High,Low,Close,Volume``);
Stooq's, for example, is shaped like
``https://stooq.com/q/d/l/?s={ticker}&i=d&d1={start:%Y%m%d}&d2={end:%Y%m%d}``.
Nothing here depends on any particular service.

Rules, for each ticker of the run (sorted, each once):

* **URL.** ``{ticker}`` is URL-encoded (``^GSPC`` -> ``%5EGSPC``, ``BRK.B``
  stays). ``{start}`` and ``{end}`` are dates: plain, they are ISO
  (``2024-01-31``); with a format spec they follow it (``{start:%Y%m%d}``).
  Any other placeholder is a configuration error.
* **Window.** ``start`` is the day after the ticker's newest stored date
  (incremental fetching), or the source's ``start`` for a ticker with no
  prices yet. ``end`` is the run's as-of date. A template with ``{end}``
  needs an as-of date: without one ``fetch`` raises ``ConfigurationError``
  (the end of a window must be a parameter, never today's date). A template
  without ``{end}`` asks the feed for everything it has from ``start``; rows
  after the as-of date are then deferred by the ingest stage.
* **Up to date.** When the as-of date is known and ``start`` is after it,
  the ticker is skipped without a request, whatever the template holds.
* **Retries.** Timeouts, connection errors, HTTP 5xx and 429, and bodies cut
  short (fewer bytes than ``Content-Length``) are retried ``retries`` times
  after the first attempt, waiting ``backoff * 2**n`` seconds before retry
  ``n`` (capped at ``MAX_BACKOFF``; a 429's ``Retry-After`` is honoured up to
  the same cap). Other 4xx answers are not retried: a 404 means the feed does
  not know the ticker.
* **Failures.** After the last failure the ticker's input carries a one-line
  ``error`` (``timed out after 4 attempts``, ``HTTP 500 Internal Server Error
  after 4 attempts``, ``HTTP 404 Not Found; not retried ...``) and the run
  goes on with the next ticker. The ingest stage reports it with the URL.
* **Size.** A body over the run's ``max_input_bytes`` (``PRICECAST_MAX_INPUT_BYTES``)
  is rejected whole, not retried: unread when its ``Content-Length`` says so,
  else reading stops at the limit (the limit counts decoded bytes).
* **Content.** A response's version is the SHA-256 of its body, so an
  unchanged answer to the same URL is skipped by the manifest. Its ``parse``
  reads the body as UTF-8 (a BOM is dropped) CSV in any layout the readers
  know, the single-ticker one holding the ticker that was asked for. An
  answer with ``Content-Type: text/html``, a body that is an HTML page or not
  CSV, or bytes that are not UTF-8 are rejected whole (``BatchRejected``).

Timeouts apply to each network operation (connecting, each read), as httpx
measures them. Requests and retries are logged on the ``pipeline.ingest.http``
logger.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import string
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx

from pipeline.errors import ConfigurationError
from pipeline.files import sha256_bytes
from pipeline.ingest.batch import BatchRejected, RawBatch
from pipeline.ingest.fetch import FEED, FetchContext, FetchedInput, over_limit, too_large_input
from pipeline.ingest.readers import parse_csv_text

logger = logging.getLogger(__name__)

#: The placeholders a URL template may hold.
PLACEHOLDERS = frozenset({"ticker", "start", "end"})
#: The longest wait between two attempts, in seconds.
MAX_BACKOFF = 30.0
#: Where the history of a ticker with no stored prices starts, by default.
DEFAULT_START = dt.date(2000, 1, 1)
USER_AGENT = "pricecast (daily price ingest)"


class _Retryable(Exception):
    """One failed attempt worth repeating; the message is the reason, e.g. ``timed out``."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class _Final(Exception):
    """A failure not worth repeating; the message is the whole one-line error."""


class _TooLarge(Exception):
    """A body over the size limit: declared so (``size``), or found so while reading
    (``size`` ``None``; ``prefix`` holds the bytes read before stopping)."""

    def __init__(self, size: int | None, limit: int, prefix: bytes = b"") -> None:
        outcome = "rejected unread" if size is not None else "stopped reading there"
        super().__init__(over_limit(size, limit, outcome))
        self.size = size
        self.limit = limit
        self.prefix = prefix


def template_fields(template: str) -> set[str]:
    """The placeholder names of a URL template.

    Raises:
        ConfigurationError: the template is not a valid format string.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(
            f"the HTTP source {template!r} is not a valid URL template: {exc}; "
            "write literal braces as {{ and }}"
        ) from exc
    return {name for _, name, _, _ in parsed if name is not None}


class HttpCsvSource:
    """Daily prices from an HTTP endpoint that answers CSV, one request per ticker.

    See the module docstring for the rules.

    Args:
        template: the URL, with ``{ticker}`` and optionally ``{start}`` and ``{end}``.
        timeout: seconds each network operation may take.
        retries: how many times a failed request is repeated (0: one attempt only).
        backoff: seconds before the first retry; doubled before each next one.
        start: the first date asked for a ticker with no stored prices.
        client: the HTTP client to use (it is not closed); default a new
            client per ``fetch`` that follows redirects.

    Raises:
        ConfigurationError: the template has no ``{ticker}``, an unknown
            placeholder, or a setting is out of range.
    """

    def __init__(
        self,
        template: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        start: dt.date = DEFAULT_START,
        client: httpx.Client | None = None,
    ) -> None:
        fields = template_fields(template)
        if "ticker" not in fields:
            raise ConfigurationError(
                f"the HTTP source {template!r} needs a {{ticker}} placeholder in its URL template"
            )
        unknown = sorted(fields - PLACEHOLDERS)
        if unknown:
            raise ConfigurationError(
                f"the HTTP source {template!r} has unknown placeholders "
                f"{', '.join('{' + name + '}' for name in unknown)}; "
                "a template may hold {ticker}, {start} and {end}"
            )
        if timeout <= 0:
            raise ConfigurationError(f"the HTTP timeout must be positive seconds, not {timeout}")
        if retries < 0:
            raise ConfigurationError(f"the HTTP retries must be 0 or more, not {retries}")
        if backoff < 0:
            raise ConfigurationError(f"the HTTP backoff must be 0 or more seconds, not {backoff}")
        self.template = template
        self.fields = fields
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.start = start
        self.client = client

    def describe(self) -> str:
        return f"HTTP CSV feed {self.template}"

    def url(self, ticker: str, start: dt.date, end: dt.date | None) -> str:
        """The URL asked for ``ticker`` between ``start`` and ``end`` (inclusive).

        Raises:
            ConfigurationError: the template has ``{end}`` and ``end`` is ``None``.
        """
        self._check_end(end)
        try:
            return self.template.format(ticker=quote(ticker, safe=""), start=start, end=end)
        except (ValueError, IndexError, KeyError) as exc:
            raise ConfigurationError(
                f"the HTTP source {self.template!r} cannot be filled in: {exc}"
            ) from exc

    def _check_end(self, end: dt.date | None) -> None:
        if end is None and "end" in self.fields:
            raise ConfigurationError(
                f"the HTTP source {self.template!r} has an {{end}} placeholder, so it needs "
                "an as-of date; pass one (--as-of) or remove {end} from the template"
            )

    def window(self, ticker: str, context: FetchContext) -> tuple[dt.date, dt.date | None]:
        """The first and last dates to ask for ``ticker``."""
        last = context.last_dates.get(ticker)
        if last is None:
            last = context.last_dates.get(ticker.upper())
        start = self.start if last is None else last + dt.timedelta(days=1)
        return start, context.as_of

    def fetch(self, context: FetchContext) -> Iterator[FetchedInput]:
        """Yield one input per ticker of ``context`` that is not up to date.

        Raises:
            ConfigurationError: the template has ``{end}`` and the run has no as-of date.
        """
        tickers = sorted({ticker.strip() for ticker in context.tickers if ticker.strip()})
        self._check_end(context.as_of)
        client = self.client or httpx.Client(
            timeout=self.timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT}
        )
        try:
            for ticker in tickers:
                start, end = self.window(ticker, context)
                if end is not None and start > end:
                    logger.debug("%s: up to date through %s; not requested", ticker, end)
                    continue
                url = self.url(ticker, start, end)
                yield self._fetch_one(client, ticker, url, context.max_input_bytes)
        finally:
            if self.client is None:
                client.close()

    def _fetch_one(
        self, client: httpx.Client, ticker: str, url: str, limit: int | None = None
    ) -> FetchedInput:
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                response, body = self._get(client, ticker, url, limit)
            except _TooLarge as exc:
                logger.warning("%s: %s", url, exc)
                stamp = exc.prefix + f"|{exc.size}|{exc.limit}".encode()
                return too_large_input(url, FEED, sha256_bytes(stamp), str(exc), exc.limit)
            except _Final as exc:
                logger.warning("%s: %s", url, exc)
                return FetchedInput(url, FEED, "", error=str(exc))
            except _Retryable as exc:
                if attempt + 1 == attempts:
                    error = f"{exc.reason} after {attempts} attempt{'s' if attempts > 1 else ''}"
                    logger.warning("%s: giving up: %s", url, error)
                    return FetchedInput(url, FEED, "", error=error)
                wait = min(self.backoff * 2**attempt, MAX_BACKOFF)
                if exc.wait is not None:
                    wait = min(max(wait, exc.wait), MAX_BACKOFF)
                logger.warning(
                    "%s: %s; retrying in %.2f s (attempt %d of %d)",
                    url,
                    exc.reason,
                    wait,
                    attempt + 2,
                    attempts,
                )
                time.sleep(wait)
                continue
            return _fetched(response, body, ticker, url)
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def _get(
        self, client: httpx.Client, ticker: str, url: str, limit: int | None
    ) -> tuple[httpx.Response, bytes]:
        """One GET: the response and its body. Raises ``_Retryable`` or ``_Final`` unless
        the answer is a 2xx, ``_TooLarge`` when the body is over ``limit`` bytes (read no
        further than that)."""
        logger.debug("GET %s", url)
        try:
            with client.stream("GET", url, timeout=self.timeout) as response:
                _check_status(response, ticker)
                body = _read_body(response, limit)
        except httpx.TimeoutException as exc:
            raise _Retryable("timed out") from exc
        except httpx.RemoteProtocolError as exc:
            raise _Retryable(f"the response was cut short ({_one_line(exc)})") from exc
        except (httpx.NetworkError, httpx.DecodingError) as exc:
            raise _Retryable(f"connection failed ({_one_line(exc)})") from exc
        except httpx.HTTPError as exc:
            raise _Final(f"request failed: {type(exc).__name__}: {_one_line(exc)}") from exc
        expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit():
            received = response.num_bytes_downloaded
            if received < int(expected):
                raise _Retryable(
                    f"the response was cut short (received {received} bytes, expected {expected})"
                )
        return response, body


def _check_status(response: httpx.Response, ticker: str) -> None:
    """Raises ``_Retryable`` or ``_Final`` unless the status is a 2xx."""
    status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    if response.status_code == 429 or response.status_code >= 500:
        raise _Retryable(status, _retry_after(response))
    if response.status_code >= 400:
        hint = (
            f" (does the feed know the ticker {ticker!r}?)" if response.status_code == 404 else ""
        )
        raise _Final(f"{status}; not retried{hint}")
    if response.status_code >= 300:
        raise _Final(f"{status}: a redirect that was not followed")


def _read_body(response: httpx.Response, limit: int | None) -> bytes:
    """The body, decoded from its Content-Encoding, read no further than ``limit`` bytes.

    Raises:
        _TooLarge: the declared length or the bytes read pass ``limit``.
    """
    declared = response.headers.get("Content-Length", "")
    encoded = response.headers.get("Content-Encoding", "identity").strip().lower()
    if limit is not None and encoded == "identity" and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(int(declared), limit)
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if limit is not None and total > limit:
            raise _TooLarge(None, limit, b"".join(chunks))
        chunks.append(chunk)
    return b"".join(chunks)


def _fetched(response: httpx.Response, body: bytes, ticker: str, url: str) -> FetchedInput:
    version = sha256_bytes(body)
    content_type = response.headers.get("Content-Type", "")
    return FetchedInput(url, FEED, version, parse=_parser(body, content_type, ticker, url, version))


def _parser(
    body: bytes, content_type: str, ticker: str, url: str, version: str
) -> Callable[[], RawBatch]:
    def parse() -> RawBatch:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type in ("text/html", "application/xhtml+xml"):
            raise BatchRejected(
                url, f"the feed answered with an HTML page (Content-Type {media_type}), not CSV"
            )
        return parse_csv_text(decode_body(body, url), url, url, version, ticker=ticker)

    return parse


def decode_body(body: bytes, url: str) -> str:
    """A response body as text (UTF-8, a BOM dropped).

    Raises:
        BatchRejected: the bytes are not UTF-8; names the URL and the line.
    """
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise BatchRejected(
            url, f"the response is not UTF-8 text (byte {exc.object[exc.start]:#04x})", line
        ) from exc


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait, when it gives a number or a date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
