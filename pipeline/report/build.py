"""The forecast report: one self-contained HTML page, rendered from Jinja2 templates.

The page loads nothing: CSS, the charts (matplotlib's SVG, see ``charts``)
and a small sorting script are inline, so it can be mailed, archived or
opened offline. It reads the same without JavaScript (the overview stays in
its default order: by ticker, or as the tickers were named); the script only
sorts the overview on a click.

It has to stay readable and small at a thousand tickers (issue 14): every
ticker gets one row of the overview table (last close, next forecast and
move, interval width, live error, stale flag), and only a bounded set gets
a chart (``charts``, 24 by default): the tickers the caller named, in their
order, else those with the largest forecast move for the next session. At
1,000 tickers the page went from 18.5 MB (two charts per ticker) to 0.78 MB
(``benchmarks/report_size.py``).

It holds no generation time and the charts' ids are derived from the
tickers, so the same database and arguments give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from sqlalchemy.engine import Connection

from pipeline.errors import ConfigurationError
from pipeline.files import write_text
from pipeline.report.charts import Painter, outer_label
from pipeline.report.data import ForecastPoint, ReportData, TickerReport, load_report_data

logger = logging.getLogger(__name__)

#: Charts on the page by default; the overview table lists every ticker.
DEFAULT_CHARTS = 24
#: Closes per chart by default: about three months of sessions, drawn wide enough to
#: read a day, and the span of each ticker's live error.
DEFAULT_HISTORY_DAYS = 60


def format_number(value: float | None) -> str:
    """A price or error for people: thousands separators, two decimals, more below 1
    (three significant digits); ``—`` for ``None``."""
    if value is None:
        return "—"
    size = abs(value)
    decimals = 2 if size >= 1 or size == 0 else min(8, 2 - math.floor(math.log10(size)))
    return f"{value:,.{decimals}f}"


def format_percent(value: float | None, signed: bool = False) -> str:
    """A fraction as a percentage with two decimals (``+0.42%`` when ``signed``)."""
    if value is None:
        return "—"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


def verdict(mase: float) -> str:
    """How a MASE compares with the naive forecast, in words."""
    if mase < 1:
        return "beats the naive forecast"
    if mase > 1:
        return "loses to the naive forecast"
    return "ties the naive forecast"


def sort_key(value: float | None) -> str:
    """A number for a ``data-`` attribute the overview's script sorts by (empty: none)."""
    return "" if value is None else f"{value:.6g}"


@dataclass(frozen=True)
class Row:
    """What the page shows of one ticker: its overview row and, when charted, its section.

    Attributes:
        part: the ticker's data.
        anchor: the id of its chart's section (``None``: not charted).
        next: the forecast for the next session (``None``: no forecasts).
        move: ``next.yhat`` over the last close, minus 1.
        width: the next session's outer band (5-95 %, else the interval) over the
            last close.
    """

    part: TickerReport
    anchor: str | None
    next: ForecastPoint | None
    move: float | None
    width: float | None

    @property
    def ticker(self) -> str:
        return self.part.ticker


def _row(part: TickerReport, anchor: str | None) -> Row:
    first = part.forecasts[0] if part.forecasts else None
    last = part.last_close
    move = width = None
    if first is not None and last:
        move = first.yhat / last - 1
        low, high = first.outer
        if low is not None and high is not None:
            width = (high - low) / last
    return Row(part, anchor, first, move, width)


def _anchor(index: int, ticker: str) -> str:
    return f"t{index}-" + (re.sub(r"[^A-Za-z0-9]+", "-", ticker).strip("-") or "ticker")


def chart_tickers(data: ReportData, charts: int) -> list[str]:
    """The tickers the page charts, in the order it shows them.

    The tickers the caller named, in their order; else the largest absolute
    forecast move for the next session first (ties by ticker); at most
    ``charts``. Tickers without a forecast or a close come last.
    """
    if data.listed:
        return [part.ticker for part in data.tickers][:charts]
    moves = {part.ticker: _row(part, None).move for part in data.tickers}
    ranked = sorted(
        moves, key=lambda ticker: (moves[ticker] is None, -abs(moves[ticker] or 0.0), ticker)
    )
    return ranked[:charts]


def _lead(row: Row, as_of: dt.date) -> str:
    part = row.part
    sentences = []
    if part.history:
        day, close = part.history[-1]
        sentences.append(f"Last close {format_number(close)} on {day.isoformat()}.")
        if day < as_of:
            sentences.append(f"No close on {as_of.isoformat()} itself.")
    else:
        sentences.append(f"No closes of {part.ticker} are stored up to {as_of.isoformat()}.")
    if row.next is not None:
        change = f" ({format_percent(row.move, signed=True)})" if row.move is not None else ""
        sentences.append(
            f"Next forecast {format_number(row.next.yhat)}{change} on "
            f"{row.next.target_date.isoformat()}, {_interval(row.next)}."
        )
    else:
        sentences.append(f"No forecasts of {part.ticker} as of {as_of.isoformat()}.")
    return " ".join(sentences)


def _interval(point: ForecastPoint) -> str:
    low, high = point.outer
    if low is None or high is None:
        return "no interval"
    name = "5-95 %" if point.q05 is not None and point.q95 is not None else "interval"
    text = f"{name} {format_number(low)} to {format_number(high)}"
    if point.q25 is not None and point.q75 is not None:
        text += f", middle half {format_number(point.q25)} to {format_number(point.q75)}"
    return text


def _error_caption(part: TickerReport) -> str | None:
    if part.mae is None or part.naive_mae is None:
        return None
    text = (
        f"{len(part.scored)} one-step forecasts scored since {part.scored[0].target_date}: "
        f"mean absolute error {format_number(part.mae)} against "
        f"{format_number(part.naive_mae)} for the naive forecast"
    )
    if part.mase is not None:
        text += f", MASE {part.mase:.3f} ({verdict(part.mase)})"
    return text + "."


@functools.cache
def _environment() -> jinja2.Environment:
    """The templates, read from the package (a wheel's files as well as a checkout's)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        price=format_number, percent=format_percent, sort_key=sort_key, verdict=verdict
    )
    return environment


def render_report(data: ReportData, charts: int = DEFAULT_CHARTS) -> str:
    """The HTML document of ``data`` (see ``build_report``)."""
    if charts < 0:
        raise ConfigurationError(f"charts must be 0 or more, got {charts}")
    charted = chart_tickers(data, charts)
    anchors = {part.ticker: _anchor(index, part.ticker) for index, part in enumerate(data.tickers)}
    rows = [
        _row(part, anchors[part.ticker] if part.ticker in charted else None)
        for part in data.tickers
    ]
    by_ticker = {row.ticker: row for row in rows}
    sections = []
    with Painter() as painter:  # one pair of figures for every chart of the page
        for ticker in charted:
            row = by_ticker[ticker]
            part = row.part
            chart = None
            if part.history or part.forecasts:
                title = f"{ticker}: closes and forecasts as of {data.as_of.isoformat()}"
                chart = painter.draw(part, f"{row.anchor}-chart", data.as_of, title)
            sections.append(
                {
                    "row": row,
                    "lead": _lead(row, data.as_of),
                    "chart": chart,
                    "band": outer_label(part),
                    "caption": _error_caption(part),
                }
            )
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            data=data,
            rows=rows,
            sections=sections,
            listed=data.listed,
            one_step=[s for s in data.live if s.horizon == 1 and s.mase is not None],
            forecast_count=sum(len(part.forecasts) for part in data.tickers),
            stale_count=sum(part.stale for part in data.tickers),
        )
    )


def build_report(
    conn: Connection,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    history_days: int = DEFAULT_HISTORY_DAYS,
    charts: int = DEFAULT_CHARTS,
) -> str:
    """One self-contained HTML document reporting the forecasts made as of ``as_of``.

    A summary names the champion version(s), their validation MASE and their
    live accuracy against the naive forecast; an overview table has a row per
    ticker (sortable by forecast move, interval width and error); then, for
    at most ``charts`` tickers (see ``chart_tickers``), a chart of the last
    ``history_days`` closes with the forecast's median path and fan and the
    one-step forecasts' absolute error against the naive forecast's, and a
    table of the forecasts.

    Args:
        conn: an open connection to a pricecast database.
        as_of: the as-of date of the forecasts to report.
        tickers: the tickers to show, charted in this order; default: those with
            forecasts as of ``as_of``.
        history_days: closes shown per chart, up to ``as_of``; the one-step
            forecasts scored since the first of them make the live error.
        charts: the most tickers charted (0: none).

    Returns:
        The HTML document (encode it as UTF-8); it references nothing outside itself.

    Raises:
        MissingDataError: there are no forecasts as of ``as_of`` (for ``tickers``).
        ConfigurationError: ``history_days`` is below 1, or ``charts`` below 0.
    """
    if charts < 0:
        raise ConfigurationError(f"charts must be 0 or more, got {charts}")
    data = load_report_data(conn, as_of, tickers, history_days)
    return render_report(data, charts)


def write_report(
    conn: Connection,
    path: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    history_days: int = DEFAULT_HISTORY_DAYS,
    charts: int = DEFAULT_CHARTS,
) -> Path:
    """Write ``build_report``'s document to ``path`` (UTF-8), atomically.

    Readers never see a half-written file, and a failure leaves an existing
    report in place.

    Args:
        conn: an open connection to a pricecast database.
        path: the HTML file to write; its folder is created when missing.
        as_of: the as-of date of the forecasts to report.
        tickers: the tickers to show, charted in this order; default: those with
            forecasts as of ``as_of``.
        history_days: closes shown per chart, up to ``as_of``.
        charts: the most tickers charted (0: none).

    Returns:
        ``path``.

    Raises:
        MissingDataError: there are no forecasts as of ``as_of`` (for ``tickers``).
        ConfigurationError: ``history_days`` is below 1, or ``charts`` below 0.
    """
    document = build_report(conn, as_of, tickers, history_days, charts)
    write_text(path, document, "report")
    logger.info("wrote the report as of %s to %s", as_of, path)
    return path


def report_path(home: Path, as_of: dt.date) -> Path:
    """Where the report as of ``as_of`` goes by default: ``<home>/reports/report-<date>.html``."""
    return home / "reports" / f"report-{as_of.isoformat()}.html"
