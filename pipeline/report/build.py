"""The forecast report: one self-contained HTML document with inline SVG charts.

The document loads nothing: no scripts, fonts, images or style sheets from
anywhere (CSS and charts are inline), so it can be mailed, archived or opened
offline, and it reads the same without JavaScript. It holds no generation
time, so the same database and arguments give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from sqlalchemy.engine import Connection

from pipeline.files import write_atomically
from pipeline.report.data import (
    ForecastPoint,
    LiveScore,
    ModelSummary,
    ReportData,
    TickerReport,
    load_report_data,
)
from pipeline.report.svg import Band, Line, Rule, TimeChart, format_number, render_time_chart

logger = logging.getLogger(__name__)

HISTORY_COLOR = "#1d4ed8"
FORECAST_COLOR = "#ea580c"
BAND_COLOR = "#fb923c"
NAIVE_COLOR = "#6b7280"

STYLE = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body {
  margin: 0; background: #f3f4f6; color: #111827;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    "Liberation Sans", Arial, sans-serif;
}
header.top { background: #111827; color: #f9fafb; padding: 22px 0 18px; }
.wrap { max-width: 1080px; margin: 0 auto; padding: 0 24px; }
header.top h1 { margin: 0; font-size: 24px; font-weight: 650; letter-spacing: -0.01em; }
header.top p { margin: 4px 0 0; color: #d1d5db; }
main.wrap { padding-top: 20px; padding-bottom: 8px; }
.card {
  background: #ffffff; border: 1px solid #e5e7eb; border-radius: 10px;
  padding: 18px 22px; margin-bottom: 20px; box-shadow: 0 1px 2px rgba(0, 0, 0, 0.04);
}
h2 { margin: 0 0 10px; font-size: 20px; }
h3 { margin: 18px 0 6px; font-size: 15px; color: #374151; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr));
  gap: 12px; margin: 0 0 6px; }
.facts div { background: #f9fafb; border: 1px solid #eef0f3; border-radius: 8px;
  padding: 10px 14px; }
.facts dt { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; color: #6b7280; }
.facts dd { margin: 2px 0 0; font-size: 18px; font-weight: 600; }
.facts dd small { display: block; font-size: 13px; font-weight: 400; color: #4b5563; }
.good { color: #047857; }
.bad { color: #b91c1c; }
nav.tickers { margin: 4px 0 0; font-size: 14px; }
nav.tickers a { color: #1d4ed8; text-decoration: none; margin-right: 14px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 14px; margin: 6px 0 4px; }
th, td { padding: 6px 10px; border-bottom: 1px solid #e5e7eb; text-align: right;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f9fafb; color: #4b5563; font-weight: 600; font-size: 12px;
  text-transform: uppercase; letter-spacing: 0.03em; }
th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; }
td.text { white-space: normal; color: #4b5563; }
figure { margin: 8px 0 4px; }
figure svg { display: block; width: 100%; height: auto; }
figcaption, .note { color: #4b5563; font-size: 13px; }
.note { margin: 6px 0; }
.lead { margin: 0 0 6px; color: #374151; }
.badge { display: inline-block; font-size: 12px; font-weight: 600; color: #374151;
  background: #eef2ff; border: 1px solid #c7d2fe; border-radius: 999px; padding: 1px 9px;
  vertical-align: middle; margin-left: 8px; }
footer { color: #6b7280; font-size: 12px; padding: 4px 0 28px; }
"""


def verdict(mase: float) -> str:
    """How a MASE compares with the naive forecast, in words."""
    if mase < 1:
        return "beats the naive forecast"
    if mase > 1:
        return "loses to the naive forecast"
    return "ties the naive forecast"


def _price(value: float | None) -> str:
    return "—" if value is None else format_number(value)


def _slug(index: int, ticker: str) -> str:
    return f"t{index}-" + (re.sub(r"[^A-Za-z0-9]+", "-", ticker).strip("-") or "ticker")


def _interval(point: ForecastPoint) -> str:
    if point.lower is None or point.upper is None:
        return "no interval"
    text = f"interval {_price(point.lower)} to {_price(point.upper)}"
    if point.q25 is not None and point.q75 is not None:
        text += f", middle half {_price(point.q25)} to {_price(point.q75)}"
    return text


def _bands(part: TickerReport) -> list[Band]:
    """The fan: contiguous runs of forecasts with an interval, and inside them runs with
    the 25 % to 75 % quantiles; each run starts at the last close."""

    def runs(
        bounds: Callable[[ForecastPoint], tuple[float | None, float | None]],
    ) -> list[list[tuple[dt.date, float, float]]]:
        found: list[list[tuple[dt.date, float, float]]] = []
        current: list[tuple[dt.date, float, float]] = []
        for index, point in enumerate(part.forecasts):
            low, high = bounds(point)
            if low is None or high is None:
                if current:
                    found.append(current)
                current = []
                continue
            if not current and index == 0 and part.history:
                day, close = part.history[-1]
                current.append((day, close, close))
            current.append((point.target_date, low, high))
        if current:
            found.append(current)
        return found

    outer = [
        Band(run, "Prediction interval", BAND_COLOR)
        for run in runs(lambda point: (point.lower, point.upper))
    ]
    inner = [
        Band(run, "Middle half of outcomes (25-75 %)", BAND_COLOR, opacity=0.45)
        for run in runs(lambda point: (point.q25, point.q75))
    ]
    return outer + inner


def _price_chart(part: TickerReport, chart_id: str, as_of: dt.date) -> str:
    forecast_line = [(point.target_date, point.yhat) for point in part.forecasts]
    lines = []
    dots_from = 0
    if part.history:
        lines.append(Line(part.history, "history", "Close", HISTORY_COLOR, width=1.8))
        if forecast_line:
            forecast_line = [part.history[-1], *forecast_line]
            dots_from = 1
    by_date = {point.target_date: point for point in part.forecasts}

    def tooltip(day: dt.date, value: float) -> str:
        point = by_date[day]
        return (
            f"{day.isoformat()} (horizon {point.horizon}): forecast {_price(value)}, "
            f"{_interval(point)}"
        )

    if forecast_line:
        lines.append(
            Line(
                forecast_line,
                "forecast",
                f"Forecast (model v{part.model_version})",
                FORECAST_COLOR,
                width=2.2,
                dots=True,
                tooltip=tooltip,
                dots_from=dots_from,
            )
        )
    history_text = (
        f"closes from {part.history[0][0]} to {part.history[-1][0]} "
        f"({len(part.history)} trading days)"
        if part.history
        else "no closes stored up to the as-of date"
    )
    forecast_text = (
        f"forecasts of model v{part.model_version} for {part.forecasts[0].target_date} to "
        f"{part.forecasts[-1].target_date}"
        + (" with their prediction interval" if _bands(part) else " without intervals")
        if part.forecasts
        else "no forecasts"
    )
    chart = TimeChart(
        chart_id=chart_id,
        title=f"{part.ticker}: closes and forecasts as of {as_of.isoformat()}",
        description=f"{part.ticker}: {history_text}, then {forecast_text}.",
        y_label="Close",
        lines=lines,
        bands=_bands(part),
        rules=[Rule(as_of, f"as of {as_of:%b} {as_of.day}")],
        css_class="chart-price",
        data={"ticker": part.ticker, "kind": "price"},
        height=320,
    )
    return render_time_chart(chart)


def _error_chart(part: TickerReport, chart_id: str, x_domain: tuple[dt.date, dt.date]) -> str:
    model = [(point.target_date, point.abs_error) for point in part.scored]
    naive = [(point.target_date, point.naive_abs_error) for point in part.scored]

    def tooltip(day: dt.date, value: float) -> str:
        return f"{day.isoformat()}: model's absolute error {_price(value)}"

    chart = TimeChart(
        chart_id=chart_id,
        title=f"{part.ticker}: absolute error of one-step forecasts against the naive forecast",
        description=(
            f"{part.ticker}: for each of {len(part.scored)} target dates from "
            f"{part.scored[0].target_date} to {part.scored[-1].target_date}, the absolute error "
            "of the one-step forecast and that of the naive forecast (the last close)."
        ),
        y_label="Absolute error",
        lines=[
            Line(naive, "naive-error", "Naive forecast |error|", NAIVE_COLOR, 1.6, dashed=True),
            Line(
                model,
                "model-error",
                "Model |error|",
                FORECAST_COLOR,
                2.0,
                dots=len(model) <= 60,
                tooltip=tooltip,
            ),
        ],
        x_domain=x_domain,
        y_from_zero=True,
        css_class="chart-error",
        data={"ticker": part.ticker, "kind": "error"},
        height=230,
    )
    return render_time_chart(chart)


def _forecast_table(part: TickerReport) -> str:
    last_close = part.history[-1][1] if part.history else None
    rows = []
    for point in part.forecasts:
        change = f"{(point.yhat / last_close - 1) * 100:+.2f}%" if last_close else "—"
        rows.append(
            f'<tr data-target-date="{point.target_date.isoformat()}">'
            f"<td>{point.target_date.isoformat()}</td><td>{point.horizon}</td>"
            f'<td class="yhat">{_price(point.yhat)}</td><td>{_price(point.lower)}</td>'
            f"<td>{_price(point.upper)}</td><td>{escape(change)}</td></tr>"
        )
    return (
        f'<table class="forecasts" data-ticker="{escape(part.ticker)}">'
        f"<caption hidden>Forecasts of {escape(part.ticker)}</caption>"
        "<thead><tr><th>Target date</th><th>Horizon (days)</th><th>Forecast</th>"
        "<th>Interval low</th><th>Interval high</th><th>vs last close</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _ticker_section(part: TickerReport, index: int, as_of: dt.date) -> str:
    slug = _slug(index, part.ticker)
    ticker = escape(part.ticker)
    badge = (
        f'<span class="badge">model v{part.model_version}</span>'
        if part.model_version is not None
        else ""
    )
    out = [f'<section class="card ticker" id="{slug}" data-ticker="{ticker}">']
    out.append(f"<h2>{ticker}{badge}</h2>")
    lead = []
    if part.history:
        day, close = part.history[-1]
        lead.append(f"Last close <strong>{_price(close)}</strong> on {day.isoformat()}.")
        if day < as_of:
            lead.append(f"No close on {as_of.isoformat()} itself.")
    else:
        lead.append(f"No closes of {ticker} are stored up to {as_of.isoformat()}.")
    if part.forecasts:
        first = part.forecasts[0]
        change = ""
        if part.history:
            change = f" ({(first.yhat / part.history[-1][1] - 1) * 100:+.2f}%)"
        lead.append(
            f"Next forecast: <strong>{_price(first.yhat)}</strong>{escape(change)} on "
            f"{first.target_date.isoformat()}, {escape(_interval(first))}."
        )
    else:
        lead.append(f"No forecasts of {ticker} as of {as_of.isoformat()}.")
    out.append(f'<p class="lead">{" ".join(lead)}</p>')
    if part.history or part.forecasts:
        out.append(f"<figure>{_price_chart(part, f'{slug}-price', as_of)}</figure>")
    out.append("<h3>Forecast error over time</h3>")
    if part.scored:
        days = [day for day, _ in part.history] + [p.target_date for p in part.forecasts]
        days += [p.target_date for p in part.scored]
        domain = (min(days), max(days))
        out.append(f"<figure>{_error_chart(part, f'{slug}-error', domain)}")
        model_mae = sum(p.abs_error for p in part.scored) / len(part.scored)
        naive_mae = sum(p.naive_abs_error for p in part.scored) / len(part.scored)
        summary = (
            f"{len(part.scored)} one-step forecasts scored since {part.scored[0].target_date}: "
            f"mean absolute error {_price(model_mae)} against {_price(naive_mae)} for the naive "
            "forecast"
        )
        if naive_mae > 0:
            mase = model_mae / naive_mae
            summary += f", MASE {mase:.3f} ({verdict(mase)})"
        out.append(f"<figcaption>{escape(summary)}.</figcaption></figure>")
    else:
        out.append(
            f'<p class="note no-scores">No one-step forecasts of {ticker} have been scored '
            f"yet: none has a target date with a close up to {as_of.isoformat()}.</p>"
        )
    if part.forecasts:
        out.append("<h3>Forecasts</h3>")
        out.append(_forecast_table(part))
    out.append("</section>")
    return "\n".join(out)


def _mase_text(mase: float | None) -> str:
    if mase is None:
        return "not recorded"
    css = "good" if mase <= 1 else "bad"
    return f'<span class="{css}">{mase:.4f}</span> ({escape(verdict(mase))})'


def _summary(data: ReportData) -> str:
    versions = ", ".join(f"v{model.version}" for model in data.models) or "none"
    forecast_count = sum(len(part.forecasts) for part in data.tickers)
    facts = [
        ("Tickers", str(len(data.tickers)), f"{forecast_count} forecasts"),
        (
            "Champion model" + ("s" if len(data.models) > 1 else ""),
            versions,
            "; ".join(
                (f"v{m.version}: " if len(data.models) > 1 else "")
                + f"{m.mode}, trained on data through {m.data_through}"
                for m in data.models
            ),
        ),
    ]
    for model in data.models:
        if model.val_mase is not None:
            facts.append(
                (
                    f"Validation MASE v{model.version}",
                    f"{model.val_mase:.4f}",
                    f"{verdict(model.val_mase)} on the validation span",
                )
            )
    one_step = [score for score in data.live if score.horizon == 1 and score.mase is not None]
    for score in one_step:
        facts.append(
            (
                f"Live one-step MASE v{score.model_version}",
                f"{score.mase:.4f}",
                f"{verdict(score.mase)}, {score.forecasts} forecasts scored",
            )
        )
    cells = "".join(
        f"<div><dt>{escape(label)}</dt><dd>{escape(value)}<small>{escape(note)}</small></dd></div>"
        for label, value, note in facts
    )
    out = ['<section class="card summary">', "<h2>Summary</h2>", f'<dl class="facts">{cells}</dl>']
    links = " ".join(
        f'<a href="#{_slug(index, part.ticker)}">{escape(part.ticker)}</a>'
        for index, part in enumerate(data.tickers)
    )
    out.append(f'<nav class="tickers" aria-label="Tickers">{links}</nav>')
    out.append("<h3>Models</h3>")
    out.append(_models_table(data.models))
    out.append("<h3>Live accuracy</h3>")
    out.append(_live_table(data.live, data.as_of))
    out.append("</section>")
    return "\n".join(out)


def _models_table(models: Sequence[ModelSummary]) -> str:
    rows = "".join(
        f'<tr data-version="{model.version}"><td>v{model.version}</td>'
        f'<td class="text">{escape(model.mode)}</td>'
        f"<td>{model.data_through.isoformat()}</td>"
        f'<td class="text">{"yes" if model.promoted else "no"}</td>'
        f"<td>{_mase_text(model.val_mase)}</td>"
        f'<td class="text decision">{escape(model.decision or "")}</td></tr>'
        for model in models
    )
    return (
        '<table class="models"><thead><tr><th>Version</th><th class="text">Mode</th>'
        '<th>Data through</th><th class="text">Promoted</th><th>Validation MASE</th>'
        '<th class="text">Decision</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _live_table(scores: Sequence[LiveScore], as_of: dt.date) -> str:
    if not scores:
        return (
            '<p class="note no-live">None of these models\' forecasts has been scored yet '
            f"(no target date with a close up to {as_of.isoformat()}).</p>"
        )
    rows = "".join(
        f'<tr data-version="{score.model_version}" data-horizon="{score.horizon}">'
        f"<td>v{score.model_version}</td><td>{score.horizon}</td><td>{score.forecasts}</td>"
        f"<td>{_price(score.mae)}</td><td>{_price(score.naive_mae)}</td>"
        f'<td class="mase">{_mase_text(score.mase)}</td>'
        f"<td>{'—' if score.coverage is None else f'{score.coverage:.0%}'}</td></tr>"
        for score in scores
    )
    return (
        '<table class="live"><thead><tr><th>Version</th><th>Horizon</th><th>Scored</th>'
        "<th>MAE</th><th>Naive MAE</th><th>MASE</th><th>Interval coverage</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f'<p class="note">Forecasts whose target date has a close up to {as_of.isoformat()}, '
        "as in the <code>model_leaderboard</code> view. MASE is the model's mean absolute error "
        "divided by the naive forecast's (the last close) on the same points: below 1 beats it, "
        "above 1 loses to it.</p>"
    )


def render_report(data: ReportData) -> str:
    """The HTML document of ``data`` (see ``build_report``)."""
    as_of = data.as_of.isoformat()
    sections = [_ticker_section(part, index, data.as_of) for index, part in enumerate(data.tickers)]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="pricecast">',
            f"<title>pricecast forecasts as of {as_of}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            '<header class="top"><div class="wrap">',
            f"<h1>Price forecasts as of {as_of}</h1>",
            f"<p>{len(data.tickers)} tickers; closes of the last {data.history_days} trading "
            "days, the champion's forecasts with their prediction intervals, and how its "
            "forecasts have done against the naive forecast.</p>",
            "</div></header>",
            '<main class="wrap">',
            _summary(data),
            *sections,
            "</main>",
            '<footer class="wrap">Made by pricecast from the tables <code>prices</code>, '
            "<code>forecasts</code> and <code>models</code> and the view "
            f"<code>forecast_accuracy</code>, with what was known on {as_of}.</footer>",
            "</body>",
            "</html>",
            "",
        ]
    )


def build_report(
    conn: Connection,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    history_days: int = 120,
) -> str:
    """One self-contained HTML document reporting the forecasts made as of ``as_of``.

    Per ticker: a chart of the last ``history_days`` closes followed by the
    champion's forecasts and their prediction interval, a chart of the
    one-step forecasts' absolute error against the naive forecast's (when any
    were scored), and a table of the forecasts. A summary names the champion
    version(s), their validation MASE and their live MASE.

    Args:
        conn: an open connection to a pricecast database.
        as_of: the as-of date of the forecasts to report.
        tickers: the tickers to show; default: those with forecasts as of ``as_of``.
        history_days: closes shown per ticker, up to ``as_of``.

    Returns:
        The HTML document (encode it as UTF-8); it references nothing outside itself.

    Raises:
        MissingDataError: there are no forecasts as of ``as_of`` (for ``tickers``).
        ConfigurationError: ``history_days`` is below 1.
    """
    data = load_report_data(conn, as_of, tickers, history_days)
    return render_report(data)


def write_report(
    conn: Connection,
    path: Path,
    as_of: dt.date,
    tickers: Sequence[str] | None = None,
    history_days: int = 120,
) -> Path:
    """Write ``build_report``'s document to ``path`` (UTF-8), atomically.

    Readers never see a half-written file, and a failure leaves an existing
    report in place.

    Args:
        conn: an open connection to a pricecast database.
        path: the HTML file to write; its folder is created when missing.
        as_of: the as-of date of the forecasts to report.
        tickers: the tickers to show; default: those with forecasts as of ``as_of``.
        history_days: closes shown per ticker, up to ``as_of``.

    Returns:
        ``path``.

    Raises:
        MissingDataError: there are no forecasts as of ``as_of`` (for ``tickers``).
        ConfigurationError: ``history_days`` is below 1.
    """
    document = build_report(conn, as_of, tickers, history_days)
    write_atomically(path, lambda temporary: temporary.write_text(document, encoding="utf-8"))
    logger.info("wrote the report as of %s to %s", as_of, path)
    return path


def report_path(home: Path, as_of: dt.date) -> Path:
    """Where the report as of ``as_of`` goes by default: ``<home>/reports/report-<date>.html``."""
    return home / "reports" / f"report-{as_of.isoformat()}.html"
