"""The daily run's summary as Markdown, for people (Prefect artifacts, logs)."""

from __future__ import annotations

import math
from typing import Any

from pipeline.freshness import describe_stale
from pipeline.results import RunSummary

#: The most tickers a run's Prefect artifacts (the forecasts table and the report's
#: table) show; every forecast stays in the ``forecasts`` table. At 5,000 tickers the
#: table of every forecast was 4.2 MB and the report's 0.5 MB: the Prefect server
#: refused the table's event (over its 1.5 MB limit) with a warning on every run, and
#: each run added 4.7 MB to Prefect's database. 100 tickers of five steps: 85 KB.
ARTIFACT_TICKERS = 100


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(summary: RunSummary) -> str:
    """A short report of one daily run: freshness, ingestion, training, accuracy, forecasts.

    Args:
        summary: the daily run's summary (``pipeline.run.daily_run``).
    """
    ingest, model, forecast = summary.ingest, summary.model, summary.forecast
    lines = [
        f"# pricecast as of {summary.as_of}",
        "",
        f"Database `{summary.database}`.",
        "",
    ]
    if summary.unchanged:
        lines += [
            "**Nothing changed** since the run that finished at "
            f"{summary.finished_at or '?'}: same prices, champion and forecasts; "
            "its results below stand and no stage ran again.",
            "",
        ]
    lines += [
        "## Data",
        "",
        f"- Inputs: {ingest.inputs} ({ingest.inputs_loaded} loaded, "
        f"{ingest.inputs_unchanged} unchanged, {ingest.inputs_rejected} rejected whole)",
        f"- Rows: {ingest.rows_read} read, {ingest.rows_loaded} loaded, "
        f"{ingest.rows_quarantined} quarantined (`rejected_prices`), "
        f"{ingest.rows_deferred} deferred to a later as-of date"
        + (
            f", {ingest.rows_superseded} superseded by another input's row"
            if ingest.rows_superseded
            else ""
        ),
    ]
    if summary.stale:
        lines.append(f"- **Stale, not forecast**: {describe_stale(summary.stale)}")
    else:
        lines.append("- Freshness: every ticker has the close of the last trading day")
    for error in ingest.errors:
        lines.append(f"- Rejected: {error}")
    mase = model.champion_val_mase
    verdict = ""
    if mase is not None:
        verdict = (
            " (loses to the naive forecast)" if mase > 1 else " (beats or ties the naive forecast)"
        )
    lines += [
        "",
        "## Model",
        "",
        f"- Decision: **{model.action}**, {model.reason}",
    ]
    if model.created:
        lines.append(f"- New version v{model.model_version}: {model.decision}")
    lines += [
        f"- Forecasting with champion v{model.champion_version}; "
        f"validation MASE {_number(mase)}{verdict}",
    ]
    backtest = summary.backtest
    if backtest:
        lines += [
            "",
            f"## Backtest (run {backtest.run_id[:12]}, as of {backtest.as_of}, one step)",
            "",
            "| model | MASE | coverage |",
            "|---|---|---|",
        ]
        for row in backtest.models:
            name = row.model
            if row.default and name != "default":
                name += " (default)"
            lines.append(f"| {name} | {_number(row.mase)} | {_number(row.coverage, 3)} |")
    lines += [
        "",
        "## Forecasts",
        "",
        f"{forecast.forecasts_written} forecasts for {len(forecast.tickers)} tickers, "
        f"{forecast.horizon} trading days after {summary.as_of}.",
    ]
    if summary.report:
        lines += ["", f"Report: `{summary.report}`"]
    return "\n".join(lines) + "\n"


def artifact_rows(
    rows: list[dict[str, Any]], limit: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The forecasts a run's artifacts show, and how many tickers ``rows`` hold.

    Every row of every ticker when there are at most ``limit`` tickers; else every row of
    the ``limit`` tickers whose next-session interval is widest relative to its forecast
    (the riskiest, what a bounded list is read for; ties by ticker), tickers without an
    interval after every one with one. The rows keep their order.

    Args:
        rows: the forecasts written (``forecasts`` rows: ticker, horizon, yhat,
            yhat_lower, yhat_upper...).
        limit: the most tickers shown (default ``ARTIFACT_TICKERS``).
    """
    limit = ARTIFACT_TICKERS if limit is None else limit
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        held = first.get(row["ticker"])
        if held is None or row["horizon"] < held["horizon"]:
            first[row["ticker"]] = row
    if len(first) <= limit:
        return list(rows), len(first)
    widths = {ticker: _width(row) for ticker, row in first.items()}
    ranked = sorted(
        widths, key=lambda ticker: (widths[ticker] is None, -(widths[ticker] or 0.0), ticker)
    )
    shown = set(ranked[:limit])
    return [row for row in rows if row["ticker"] in shown], len(first)


def artifact_scope(shown: int, total: int) -> str:
    """What a bounded artifact holds, for its description and text: empty when it shows
    every ticker (``artifact_rows``)."""
    if shown >= total:
        return ""
    return (
        f"{shown:,} of {total:,} tickers, those with the widest next-session interval; "
        "every forecast is in the database's `forecasts` table"
    )


def _width(row: dict[str, Any]) -> float | None:
    """The row's interval width relative to its forecast, if it has an interval (a row
    read from the database has NaN, not ``None``, where it has none)."""
    lower, upper, yhat = row.get("yhat_lower"), row.get("yhat_upper"), row.get("yhat")
    if any(value is None or not math.isfinite(value) for value in (lower, upper, yhat)):
        return None
    if not yhat:
        return None
    return (upper - lower) / abs(yhat)


def _band(row: dict[str, Any]) -> tuple[str, str]:
    width = _width(row)
    if width is None:
        return "-", "-"
    return f"{row['yhat_lower']:.2f} to {row['yhat_upper']:.2f}", f"{width:.1%}"


def render_forecast_report(
    as_of: str,
    version: int,
    rows: list[dict[str, Any]],
    report: str | None,
    link: str | None,
    total_tickers: int | None = None,
) -> str:
    """The report's content as Markdown, for the Prefect UI: per ticker, the next
    session's forecast with its interval and the last step's, then where the HTML
    report with the charts is (a link when ``link`` is given, else its path).

    Args:
        as_of: the run's as-of date.
        version: the model that forecast.
        rows: the forecasts written (``forecasts`` rows: ticker, target_date, horizon,
            yhat, yhat_lower, yhat_upper).
        report: the HTML report's path on the machine that ran the flow.
        link: the report's URL, when the reports folder is served somewhere.
        total_tickers: the tickers forecast, when ``rows`` show only some of them
            (``artifact_rows``): the text says so.
    """
    by_ticker: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_ticker.setdefault(row["ticker"], []).append(row)
    scope = artifact_scope(len(by_ticker), total_tickers or len(by_ticker))
    lines = [
        f"# Forecasts as of {as_of} (model v{version})",
        "",
        *([f"{scope[0].upper()}{scope[1:]}.", ""] if scope else []),
        "| ticker | next session | forecast | interval | width | last step | forecast | interval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ticker, steps in sorted(by_ticker.items()):
        steps = sorted(steps, key=lambda row: row["horizon"])
        first, last = steps[0], steps[-1]
        band, width = _band(first)
        last_band, _ = _band(last)
        lines.append(
            f"| {ticker} | {first['target_date']} | {first['yhat']:.2f} | {band} | {width} | "
            f"{last['target_date']} | {last['yhat']:.2f} | {last_band} |"
        )
    lines.append("")
    if link:
        lines.append(f"Charts and errors per ticker: [the HTML report]({link}).")
    elif report:
        lines.append(
            f"Charts and errors per ticker: the HTML report `{report}` on the machine that ran "
            "the flow (set PRICECAST_REPORT_BASE_URL to the address its folder is served at "
            "to link it here)."
        )
    return "\n".join(lines) + "\n"
