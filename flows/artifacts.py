"""Prefect artifacts of a daily run: the forecasts written, and a Markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline.results import RunSummary
from pipeline.summary import artifact_rows, artifact_scope, render_forecast_report, render_markdown

FORECAST_COLUMNS = (
    "ticker",
    "target_date",
    "horizon",
    "yhat",
    "yhat_lower",
    "yhat_upper",
    "model_version",
)


def report_link(report: str | None, base_url: str | None) -> str | None:
    """The report's URL under ``base_url`` (where the reports folder is served), if any."""
    if not report or not base_url:
        return None
    return f"{base_url.rstrip('/')}/{Path(report).name}"


def publish_artifacts(
    summary: RunSummary, forecasts: list[dict[str, Any]], report_base_url: str | None = None
) -> None:
    """Publish the forecasts as a table, the run's summary as Markdown, and the report:
    its per-ticker table as Markdown, linking the HTML report when ``report_base_url``
    says where the reports folder is served (a ``file://`` link to the worker's disk
    would be useless in the UI of another machine).

    Artifact keys (``forecasts``, ``daily-summary``, ``report``) let the Prefect UI
    show each one's history across runs. The forecasts table and the report's show at
    most ``ARTIFACT_TICKERS`` tickers (``pipeline.summary.artifact_rows``), and say so.
    """
    shown, total = artifact_rows(forecasts)
    rows = [
        {
            column: round(row[column], 4) if isinstance(row[column], float) else row[column]
            for column in FORECAST_COLUMNS
        }
        for row in shown
    ]
    version = summary.model.champion_version
    as_of = summary.as_of.isoformat()
    scope = artifact_scope(len({row["ticker"] for row in rows}), total)
    create_table_artifact(
        key="forecasts",
        table=rows,
        description=f"Forecasts as of {as_of} by model v{version}"
        + (f" ({scope})" if scope else ""),
    )
    create_markdown_artifact(
        key="daily-summary",
        markdown=render_markdown(summary),
        description=f"pricecast daily run as of {as_of}",
    )
    report = summary.report
    create_markdown_artifact(
        key="report",
        markdown=render_forecast_report(
            as_of, version, rows, report, report_link(report, report_base_url), total
        ),
        description="Forecasts per ticker with their intervals, and where the HTML report is",
    )
