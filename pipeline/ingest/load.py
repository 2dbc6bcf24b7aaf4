"""The ingest stage: sources -> validation -> ``prices``, the quarantine, flags and manifest.

For each input (a file, or a feed's response for one ticker):

1. the manifest (``ingested_inputs``) is asked whether this content was
   already ingested; an unchanged input is skipped, so re-dropping a file is
   a no-op (an input with rows deferred to a later as-of date is read again
   once the as-of date passes them);
2. the input is parsed; one that cannot be read at all is rejected whole,
   recorded in the manifest with the reason, and the run goes on;
3. every row is validated (``validate``): valid rows are upserted into
   ``prices``, failed rows go to ``rejected_prices`` with their raw values,
   source, line and reasons, and rows dated after the as-of date are deferred.
   A valid row that loses to a row of another input (below) is superseded:
   for every input, rows read = rows loaded + rows quarantined + rows deferred
   + rows superseded;
4. new tickers join the universe (``tickers``, active, on the default exchange).

**Which row wins.** Within an input, the last occurrence of a ticker and
date. Between files, the file whose name sorts later, whatever order they
arrive in: so re-dropped, overlapping and out-of-order files converge to the
table one clean load of all of them in name order gives (name drops by date,
e.g. ``prices-2024-03-01.csv``). A changed file (same path, new content)
replaces its own rows: rows it no longer holds are deleted. Rows from feeds
(HTTP, Yahoo) always replace what is stored, and are replaced by files.

**Superseded rows.** A valid row is counted loaded only if it is in ``prices``
when the ingest ends. One that a stored row from a later file keeps out is
superseded, not loaded; one that a later input of the same ingest replaces
(two files of a folder with the same ticker and date, or a feed after a file)
moves from the earlier input's loaded rows to its superseded rows, in the
report and in the manifest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from pipeline import columns as c
from pipeline.days import as_days
from pipeline.db.manifest import is_unchanged, manifest_entry, origin_key, record_input
from pipeline.db.prices import upsert_prices
from pipeline.db.quarantine import quarantine_rows, record_flags
from pipeline.db.runs import PRICES, bump_data_version
from pipeline.db.schema import ingested_inputs, prices
from pipeline.db.tickers import (
    active_tickers,
    add_tickers,
    refresh_date_spans,
    ticker_exchanges,
)
from pipeline.errors import ConfigurationError, DatabaseUnavailableError
from pipeline.files import sha256_bytes
from pipeline.ingest.batch import BatchRejected, InputTooLarge
from pipeline.ingest.contests import LoadedInput, count_contests, supersede
from pipeline.ingest.fetch import (
    FILE,
    MAX_INPUT_BYTES,
    FetchContext,
    FetchedInput,
    PriceSource,
)
from pipeline.ingest.progress import Progress, write_in_steps
from pipeline.ingest.sources import FileSource
from pipeline.ingest.validate import (
    MAX_PRICE,
    ValidatedBatch,
    ValidationRules,
    validate_batch,
)
from pipeline.results import IngestSummary
from pipeline.trading_calendar import DEFAULT_EXCHANGE, prepare_calendars

logger = logging.getLogger(__name__)

LOADED, REJECTED, UNCHANGED, FAILED = "loaded", "rejected", "unchanged", "failed"


@dataclass
class InputReport:
    """What one input contributed."""

    origin: str
    kind: str
    status: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_deferred: int = 0
    rows_superseded: int = 0
    flags: int = 0
    tickers: list[str] = field(default_factory=list)
    error: str | None = None

    def named_error(self) -> str | None:
        """The error naming the input once: a rejected input's error names it already
        (``BatchRejected``), a failed fetch's does not."""
        if self.error is None or self.error.startswith(self.origin):
            return self.error
        return f"{self.origin}: {self.error}"


@dataclass
class IngestReport:
    """What one ingest run did; for every input, read = loaded + quarantined + deferred
    + superseded."""

    run_id: str
    inputs: list[InputReport] = field(default_factory=list)

    def _total(self, name: str) -> int:
        return sum(getattr(report, name) for report in self.inputs)

    @property
    def rows_read(self) -> int:
        return self._total("rows_read")

    @property
    def rows_loaded(self) -> int:
        return self._total("rows_loaded")

    @property
    def rows_quarantined(self) -> int:
        return self._total("rows_quarantined")

    @property
    def rows_deferred(self) -> int:
        return self._total("rows_deferred")

    @property
    def rows_superseded(self) -> int:
        return self._total("rows_superseded")

    @property
    def tickers(self) -> list[str]:
        return sorted({ticker for report in self.inputs for ticker in report.tickers})

    def count(self, status: str) -> int:
        """Inputs that ended with ``status``."""
        return sum(report.status == status for report in self.inputs)

    def summary(self) -> IngestSummary:
        """Counts for logs and flow results."""
        return IngestSummary(
            run_id=self.run_id,
            inputs=len(self.inputs),
            inputs_loaded=self.count(LOADED),
            inputs_unchanged=self.count(UNCHANGED),
            inputs_rejected=self.count(REJECTED) + self.count(FAILED),
            rows_read=self.rows_read,
            rows_loaded=self.rows_loaded,
            rows_quarantined=self.rows_quarantined,
            rows_deferred=self.rows_deferred,
            rows_superseded=self.rows_superseded,
            flags=self._total("flags"),
            tickers=self.tickers,
            errors=[r.named_error() for r in self.inputs if r.error],
        )


#: Tickers per query of ``previous_closes`` (two bound values each).
_PREVIOUS_CLOSES_CHUNK = 2000


def previous_closes(
    conn: Connection, first_dates: Mapping[str, dt.date]
) -> dict[str, tuple[dt.date, float]]:
    """Per ticker, the newest stored close before the given date.

    One query for up to ``_PREVIOUS_CLOSES_CHUNK`` tickers: the pairs as a ``VALUES``
    list, each joined to its row by the primary key (a query per ticker cost 0.3 s
    for 1,000 tickers on SQLite, nearly all of it statement overhead).
    """
    found: dict[str, tuple[dt.date, float]] = {}
    pairs = list(first_dates.items())
    for start in range(0, len(pairs), _PREVIOUS_CLOSES_CHUNK):
        wanted = (
            sa.values(
                sa.column("ticker", prices.c[c.TICKER].type),
                sa.column("first_date", sa.Date()),
                name="wanted",
            )
            .data(pairs[start : start + _PREVIOUS_CLOSES_CHUNK])
            .cte("wanted")
        )
        earlier = prices.alias("earlier")
        newest = (
            sa.select(sa.func.max(earlier.c[c.TRADE_DATE]))
            .where(
                earlier.c[c.TICKER] == wanted.c.ticker,
                earlier.c[c.TRADE_DATE] < wanted.c.first_date,
            )
            .correlate(wanted)
            .scalar_subquery()
        )
        rows = conn.execute(
            sa.select(prices.c[c.TICKER], prices.c[c.TRADE_DATE], prices.c[c.CLOSE])
            .select_from(wanted)
            .join(
                prices,
                sa.and_(prices.c[c.TICKER] == wanted.c.ticker, prices.c[c.TRADE_DATE] == newest),
            )
        )
        found.update((ticker, (day, close)) for ticker, day, close in rows)
    return found


def _has_feeds(sources: Sequence[PriceSource]) -> bool:
    """Whether some source is not a file source (only feeds read ``last_dates``)."""
    return any(not isinstance(source, FileSource) for source in sources)


def _last_dates(conn: Connection) -> dict[str, dt.date]:
    query = sa.select(prices.c[c.TICKER], sa.func.max(prices.c[c.TRADE_DATE])).group_by(
        prices.c[c.TICKER]
    )
    return dict(conn.execute(query).all())


def _delete_dropped_rows(conn: Connection, source: str, validated: ValidatedBatch) -> int:
    """Delete the rows a changed file no longer holds (rows stored with its name)."""
    result = conn.execute(
        sa.select(prices.c[c.TICKER], prices.c[c.TRADE_DATE]).where(prices.c[c.SOURCE] == source)
    )
    try:
        # Column by column from the DBAPI cursor's plain tuples, as ``read_close_arrays``
        # does: no Row objects, no per-value date parsing.
        rows = result.cursor.fetchall()
    finally:
        result.close()
    if not rows:
        return 0
    stored = pd.DataFrame(
        {
            c.TICKER: list(map(itemgetter(0), rows)),
            c.TRADE_DATE: as_days(list(map(itemgetter(1), rows))),
        }
    )
    kept = pd.DataFrame(
        {
            c.TICKER: validated.valid[c.TICKER].to_numpy(),
            c.TRADE_DATE: as_days(pd.to_datetime(validated.valid[c.TRADE_DATE]).to_numpy()),
        }
    ).drop_duplicates()
    joined = stored.merge(kept, on=[c.TICKER, c.TRADE_DATE], how="left", indicator=True)
    dropped = joined[joined["_merge"] == "left_only"]
    if dropped.empty:
        return 0
    conn.execute(
        sa.delete(prices).where(
            prices.c[c.TICKER] == sa.bindparam("dropped_ticker"),
            prices.c[c.TRADE_DATE] == sa.bindparam("dropped_day"),
            prices.c[c.SOURCE] == source,
        ),
        [
            {"dropped_ticker": ticker, "dropped_day": day}
            for ticker, day in zip(
                dropped[c.TICKER].tolist(), dropped[c.TRADE_DATE].dt.date.tolist(), strict=True
            )
        ],
    )
    bump_data_version(conn, PRICES)
    return len(dropped)


def ingest(
    conn: Connection,
    sources: Sequence[PriceSource],
    *,
    as_of: dt.date | None = None,
    tickers: Sequence[str] | None = None,
    run_id: str | None = None,
    jump_threshold: float = 0.25,
    exchange: str = DEFAULT_EXCHANGE,
    now: dt.datetime | None = None,
    max_price: float = MAX_PRICE,
    max_input_bytes: int | None = MAX_INPUT_BYTES,
) -> IngestReport:
    """Ingest every input of ``sources``.

    Args:
        conn: an open connection; the caller owns the transaction.
        sources: where prices come from.
        as_of: rows dated after it are deferred; ``None`` defers nothing.
        tickers: the tickers feeds fetch; default the active universe.
            Files are always loaded whole.
        run_id: recorded with quarantined rows, flags and manifest entries.
        jump_threshold: one-day moves beyond this fraction are flagged.
        exchange: the exchange of tickers seen for the first time.
        max_price: prices above it are quarantined (``implausible``).
        max_input_bytes: an input larger than this is rejected whole without being
            read (a file) or read no further (a response); ``None``: no limit.
        now: the time of the run, recorded in the manifest and quarantine; rows dated
            after their exchange's latest session at that time are quarantined
            (``future``). Default: now (UTC).

    Raises:
        ConfigurationError: a source is misconfigured.
    """
    report = IngestReport(run_id=run_id or uuid.uuid4().hex)
    stamp = now or dt.datetime.now(dt.UTC)
    rules = ValidationRules(
        as_of=as_of,
        jump_threshold=jump_threshold,
        default_exchange=exchange,
        now=stamp,
        max_price=max_price,
    )
    # Validation needs the exchanges' calendars: built meanwhile, while inputs are read.
    prepare_calendars({exchange, *ticker_exchanges(conn).values()})
    wanted = list(tickers) if tickers else active_tickers(conn)
    context = FetchContext(
        as_of=as_of,
        tickers=wanted,
        # Only feeds read them; a GROUP BY over every stored row (0.75 s for 2.52 million
        # rows on SQLite) is not run for files alone.
        last_dates=_last_dates(conn) if _has_feeds(sources) else {},
        max_input_bytes=max_input_bytes,
    )
    loaded: dict[str, LoadedInput] = {}  # this ingest's loaded inputs, by their rows' source
    known = _manifest_versions(conn)
    for source in sources:
        logger.info("ingesting from %s", source.describe())
        first = len(report.inputs)
        for fetched in source.fetch(context):
            if _known_unchanged(known, fetched, as_of):
                outcome = _Outcome(InputReport(fetched.origin, fetched.kind, UNCHANGED))
            else:
                outcome = _ingest_isolated(conn, fetched, report.run_id, rules, loaded)
            report.inputs.append(outcome.report)
            supersede(conn, loaded, outcome.displaced)
            if outcome.loaded is not None:
                loaded[outcome.loaded.source] = outcome.loaded
            _log(outcome.report)
        _log_source(source.describe(), report.inputs[first:])
    return report


def _manifest_versions(conn: Connection) -> dict[str, dict[str, Any]]:
    """What ``is_unchanged`` reads of every manifest row, by origin key: one query, where
    asking for each input's row took 1,000 queries and 1,000 savepoints for a drop folder
    of 1,000 files ingested before (0.7 of 1.1 s of such an ingest)."""
    columns = ("origin_key", "version", "rows_deferred", c.AS_OF_DATE)
    query = sa.select(*(ingested_inputs.c[name] for name in columns))
    return {row["origin_key"]: dict(row) for row in conn.execute(query).mappings()}


def _known_unchanged(
    known: dict[str, dict[str, Any]], fetched: FetchedInput, as_of: dt.date | None
) -> bool:
    """Whether ``fetched`` is, by the manifest read when the ingest began (``known``),
    content ingested before that this ingest would not change. Each entry answers once:
    an origin fetched twice in one ingest is judged the second time by its row then."""
    if fetched.error is not None or fetched.parse is None:
        return False
    entry = known.pop(origin_key(fetched.origin), None)
    return is_unchanged(entry, fetched.version, as_of)


@dataclass
class _Outcome:
    """What ingesting one input gave: its report; the rows of earlier inputs of this
    ingest it replaced, by their source; itself, when it loaded rows."""

    report: InputReport
    displaced: dict[str, int] = field(default_factory=dict)
    loaded: LoadedInput | None = None


def _log_source(description: str, results: Sequence[InputReport]) -> None:
    """One line per source at INFO (a feed of 1,000 tickers is 1,000 inputs, each
    logged at DEBUG): its inputs by outcome and its rows."""
    unchanged = sum(result.status == UNCHANGED for result in results)
    rejected = sum(bool(result.error) for result in results)
    logger.info(
        "%s: %d inputs (%d unchanged, %d rejected); %d rows read, %d loaded, %d quarantined, "
        "%d deferred, %d superseded, %d flagged",
        description,
        len(results),
        unchanged,
        rejected,
        sum(result.rows_read for result in results),
        sum(result.rows_loaded for result in results),
        sum(result.rows_quarantined for result in results),
        sum(result.rows_deferred for result in results),
        sum(result.rows_superseded for result in results),
        sum(result.flags for result in results),
    )


def _log(result: InputReport) -> None:
    """Each input at DEBUG, or at WARNING when it was rejected whole."""
    if result.status == UNCHANGED:
        logger.debug("%s: unchanged since it was ingested; skipped", result.origin)
    elif result.error:
        logger.warning("rejected whole: %s", result.named_error())
    else:
        logger.debug(
            "%s: %d rows read, %d loaded, %d quarantined, %d deferred, %d superseded, %d flagged",
            result.origin,
            result.rows_read,
            result.rows_loaded,
            result.rows_quarantined,
            result.rows_deferred,
            result.rows_superseded,
            result.flags,
        )


#: Failures of the database itself (a lost connection, a server going away): the run
#: stops and may be retried; every other failure belongs to the input being read.
_DATABASE_FAILURES = (sa_exc.OperationalError, sa_exc.InterfaceError, DatabaseUnavailableError)


def _ingest_isolated(
    conn: Connection,
    fetched: FetchedInput,
    run_id: str,
    rules: ValidationRules,
    loaded: dict[str, LoadedInput],
) -> _Outcome:
    """``_ingest_one`` under a savepoint: an input that fails in a way no rule foresaw (a
    value the database refuses, a bug) is undone and reported rejected whole, naming
    it, and the next input goes on; one poison file never stops a folder. Failures of
    the database itself and configuration errors stop the ingest."""
    savepoint = conn.begin_nested()
    try:
        result = _ingest_one(conn, fetched, run_id, rules, loaded)
    except (*_DATABASE_FAILURES, ConfigurationError):
        savepoint.rollback()
        raise
    except Exception as exc:  # noqa: BLE001 - a poison input must not stop the others
        savepoint.rollback()
        logger.exception("%s: could not be ingested", fetched.origin)
        error = f"{fetched.origin}: could not be ingested: unexpected {type(exc).__name__}: {exc}"
        record_input(
            conn,
            {
                "origin": fetched.origin,
                "kind": fetched.kind,
                "version": fetched.version,
                c.AS_OF_DATE: rules.as_of,
                "run_id": run_id,
                "ingested_at": rules.now,
                "status": REJECTED,
                "error": error[:2000],
                "rows_read": 0,
                "rows_loaded": 0,
                "rows_quarantined": 0,
                "rows_deferred": 0,
                "rows_superseded": 0,
            },
        )
        return _Outcome(InputReport(fetched.origin, fetched.kind, REJECTED, error=error))
    savepoint.commit()
    return result


#: The counts of a manifest row for an input of which no row was read.
_NOTHING_READ = dict.fromkeys(
    ("rows_read", "rows_loaded", "rows_quarantined", "rows_deferred", "rows_superseded"), 0
)


def _ingest_one(
    conn: Connection,
    fetched: FetchedInput,
    run_id: str,
    base_rules: ValidationRules,
    loaded_before: dict[str, LoadedInput],
) -> _Outcome:
    as_of, stamp, exchange = base_rules.as_of, base_rules.now, base_rules.default_exchange
    entry = manifest_entry(conn, fetched.origin)
    manifest = {
        "origin": fetched.origin,
        "kind": fetched.kind,
        "version": fetched.version,
        c.AS_OF_DATE: as_of,
        "run_id": run_id,
        "ingested_at": stamp,
    }
    if fetched.error is not None or fetched.parse is None:
        error = fetched.error or "nothing was fetched"
        failed = InputReport(fetched.origin, fetched.kind, FAILED, error=error)
        # Recorded, so that an operator sees the failure in SQL; an empty version never
        # matches a content's hash, so the next fetch that succeeds is ingested.
        record_input(
            conn,
            {
                **manifest,
                **_NOTHING_READ,
                "status": FAILED,
                "error": (failed.named_error() or "")[:2000],
            },
        )
        return _Outcome(failed)
    if is_unchanged(entry, fetched.version, as_of):
        return _Outcome(InputReport(fetched.origin, fetched.kind, UNCHANGED))
    progress = Progress(fetched.origin, logger)
    try:
        batch = fetched.parse()
    except BatchRejected as exc:
        if isinstance(exc, InputTooLarge):
            # Recorded under a version of its own limit: with a higher limit it is read again.
            manifest["version"] = sha256_bytes(f"{fetched.version}|over {exc.limit}".encode())
        record_input(
            conn,
            {
                **manifest,
                "status": REJECTED,
                "error": str(exc)[:2000],
                "rows_read": 0,
                "rows_loaded": 0,
                "rows_quarantined": 0,
                "rows_deferred": 0,
                "rows_superseded": 0,
            },
        )
        return _Outcome(InputReport(fetched.origin, fetched.kind, REJECTED, error=str(exc)))

    progress.note("read", batch.rows, batch.rows)
    rules = dataclasses.replace(base_rules, exchanges=ticker_exchanges(conn))
    validated = validate_batch(batch, rules, lambda firsts: previous_closes(conn, firsts))
    progress.note("validated", batch.rows, batch.rows)
    loaded_tickers = sorted(validated.valid[c.TICKER].unique())
    add_tickers(conn, loaded_tickers, exchange, activate=False)
    if fetched.kind == FILE and entry is not None and entry["version"] != fetched.version:
        removed = _delete_dropped_rows(conn, batch.source, validated)
        if removed:
            logger.info(
                "%s changed: %d rows it no longer holds were deleted", fetched.origin, removed
            )
    lost, displaced = count_contests(conn, batch.source, validated.valid, loaded_before)
    submitted = write_in_steps(
        validated.valid.drop(columns="line"), lambda rows: upsert_prices(conn, rows), progress
    )
    if submitted:
        bump_data_version(conn, PRICES)
    loaded = submitted - lost
    quarantined = quarantine_rows(
        conn,
        validated.rejected,
        source=batch.origin,
        source_version=batch.version,
        run_id=run_id,
        rejected_at=stamp,
    )
    flagged = record_flags(conn, validated.flags, source=batch.origin, run_id=run_id)
    refresh_date_spans(conn, loaded_tickers)
    progress.note("done", batch.rows, batch.rows)
    result = InputReport(
        fetched.origin,
        fetched.kind,
        LOADED,
        rows_read=batch.rows,
        rows_loaded=loaded,
        rows_quarantined=quarantined,
        rows_deferred=validated.deferred,
        rows_superseded=lost,
        flags=flagged,
        tickers=loaded_tickers,
    )
    assert result.rows_read == loaded + quarantined + validated.deferred + lost, asdict(result)
    row = {
        **manifest,
        "status": LOADED,
        "error": None,
        "rows_read": result.rows_read,
        "rows_loaded": loaded,
        "rows_quarantined": quarantined,
        "rows_deferred": validated.deferred,
        "rows_superseded": lost,
    }
    record_input(conn, row)
    return _Outcome(result, displaced, LoadedInput(batch.source, result, row))


def ingest_paths(
    conn: Connection,
    paths: Sequence[Path | str],
    *,
    as_of: dt.date | None = None,
    run_id: str | None = None,
    **options: Any,
) -> IngestReport:
    """Ingest files and folders (see ``ingest``).

    Raises:
        InputFileError: a path does not exist.
    """
    return ingest(conn, [FileSource(paths)], as_of=as_of, run_id=run_id, **options)
